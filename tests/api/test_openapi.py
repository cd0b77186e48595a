"""The OpenAPI document, and schemathesis holding every operation to it."""
import re
from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chat import accounts
from support.helpers import sign

ADMIN_TOKEN = "admin-token-for-the-fuzzer-0123456789"
UUID = "123e4567-e89b-12d3-a456-426614174000"


@dataclass
class Credentials:
    email: str
    agent_token: str
    chat_id: str


@pytest.fixture
def fuzzed_app(make_app):
    # No waiting slots: a generated `wait` of 25 s answers at once instead of stalling the run.
    return make_app(ADMIN_TOKEN=ADMIN_TOKEN, LONGPOLL_MAX_WAITERS=0, RATELIMIT_ENABLED=False)


@pytest.fixture
def credentials(fuzzed_app):
    client = fuzzed_app.test_client()
    with fuzzed_app.app_context():
        accounts.save_user("fuzz@example.com", UUID, "Fuzz")
        _, agent_token = accounts.add_agent("fuzzer", "Fuzzer")
    response = client.post("/api/client/live/create", json={"data": {
        "email": "fuzz@example.com", "created_at": 1, "message": "seed"}},
        headers={"Authorization": f"Bearer {sign('fuzz@example.com', UUID)}"})
    return Credentials("fuzz@example.com", agent_token, response.json["data"]["chatId"])


@pytest.fixture
def api_schema(fuzzed_app):
    return schemathesis.openapi.from_wsgi("/api/openapi.json", fuzzed_app)


schema = schemathesis.pytest.from_fixture("api_schema")


def authorize(case, credentials):
    """Sign the request as a real customer, agent or admin, and often aim it at a real chat,
    so that generated requests get past authentication and lookups to the code behind."""
    headers = dict(case.headers or {})
    path = case.operation.path
    if path.startswith("/api/client/"):
        data = case.body.get("data") if isinstance(case.body, dict) else None
        if isinstance(data, dict):
            data["email"] = credentials.email
            if isinstance(data.get("chat_id"), str) and len(data["chat_id"]) % 2 == 0:
                data["chat_id"] = credentials.chat_id
        headers["Authorization"] = f"Bearer {sign(credentials.email, UUID)}"
    elif path.startswith("/api/agent/"):
        headers["Authorization"] = f"Bearer {credentials.agent_token}"
        chat_id = (case.path_parameters or {}).get("chat_id")
        if isinstance(chat_id, str) and len(chat_id) % 2 == 0:
            case.path_parameters["chat_id"] = credentials.chat_id
    elif path.startswith("/api/admin/"):
        headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    case.headers = headers


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_and_every_answer_matches_the_document(case, credentials):
    authorize(case, credentials)
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error, status_code_conformance,
                                             content_type_conformance,
                                             response_schema_conformance])


def test_document_covers_the_whole_api(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    document = response.json
    assert document["openapi"].startswith("3.")
    assert set(document["components"]["securitySchemes"]) == {"customerHmac", "agentToken",
                                                              "adminToken"}
    operations = {(path, method) for path, item in document["paths"].items() for method in item}
    routes = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
              for rule in client.application.url_map.iter_rules()
              for method in rule.methods - {"HEAD", "OPTIONS"}
              # (the pages for people and their files are not API)
              if rule.endpoint not in ("static", "inbox.inbox_page", "inbox.front_page",
                                       "inbox.doc_file", "openapi.openapi_document")}
    assert routes == operations
    create = document["paths"]["/api/client/live/create"]["post"]
    assert create["security"] == [{"customerHmac": []}]
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])


def test_only_limited_operations_document_429(client):
    """/healthz (and this document, which is not in it) are never rate limited; every operation
    that takes credentials can be (its caller's limit, or failed authentications)."""
    document = client.get("/api/openapi.json").json
    for path, item in document["paths"].items():
        for method, op in item.items():
            limited = "security" in op
            assert ("429" in op["responses"]) == limited, (path, method)
            if limited:
                assert "Retry-After" in op["responses"]["429"]["headers"]
    assert "429" not in document["paths"]["/healthz"]["get"]["responses"]
