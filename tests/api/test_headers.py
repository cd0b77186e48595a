"""Every answer is the JSON envelope in UTF-8 with `X-Content-Type-Options: nosniff` and
`Cache-Control: no-store`, OPTIONS included, and the OpenAPI document lists the errors each
operation can answer."""
import json

import pytest

import models
from chat import chats
from support.helpers import assert_error, release_database

CREATE = "/api/client/live/create"
EMOJI = "\U0001f600"


def expect_every_answer_headers(response):
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"


@pytest.fixture
def strict_app(make_app):
    return make_app(RATELIMIT_AUTH_FAILURES="1 per minute", MAX_CONTENT_LENGTH=1024)


def test_every_kind_of_answer_carries_the_headers(strict_app, monkeypatch):
    client = strict_app.test_client()
    answers = {
        200: client.get("/healthz"),
        "options": client.options(CREATE),
        "document": client.get("/api/openapi.json"),
        400: client.post(CREATE, data="{", content_type="application/json"),
        404: client.get("/nowhere"),
        405: client.get(CREATE),
        413: client.post(CREATE, json={"data": {"message": "x" * 2000}}),
        415: client.post(CREATE, data="{}", content_type="text/plain"),
    }

    def explode():
        raise RuntimeError("boom")

    with monkeypatch.context() as patched:
        for name in ("check_database", "database_health"):
            patched.setattr(models, name, explode)
        answers[500] = client.get("/healthz")
    # The last two: after one failed sign-in, this address gets 429 for the rest of the minute.
    customer_headers = {"Authorization": "Bearer " + "0" * 64}
    for status in (401, 429):
        answers[status] = client.post(CREATE, json={"data": {"email": "a@example.com"}},
                                      headers=customer_headers)
    for status, response in answers.items():
        if isinstance(status, int):
            assert response.status_code == status, (status, response.get_data(as_text=True))
        expect_every_answer_headers(response)
        assert isinstance(response.json, dict)


def test_a_database_failure_carries_the_headers(tmp_path, make_app):
    app = make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'chat.db'}")
    with app.app_context():
        models.database.pragma("query_only", 1, permanent=True)
    release_database()
    response = app.test_client().get("/healthz")
    assert_error(response, 503, "database_unavailable")
    expect_every_answer_headers(response)


@pytest.mark.parametrize("path, methods", [
    (CREATE, ["OPTIONS", "POST"]),
    ("/api/admin/users", ["DELETE", "OPTIONS", "PUT"]),
    ("/api/agent/chats/chat-x/messages", ["GET", "HEAD", "OPTIONS", "POST"]),
    ("/healthz", ["GET", "HEAD", "OPTIONS"]),
])
def test_options_answers_an_envelope_listing_the_methods(client, path, methods):
    response = client.options(path)
    assert response.status_code == 200
    assert response.json == {"status": "success", "message": "Allowed methods.",
                             "data": {"methods": methods}, "error": None}
    assert response.headers["Allow"] == ", ".join(methods)
    expect_every_answer_headers(response)


def test_options_on_an_unknown_url_is_a_404_envelope(client):
    assert_error(client.options("/nowhere"), 404, "not_found")


def test_a_cors_preflight_is_an_envelope_too(make_app):
    client = make_app(CORS_ORIGINS="https://app.example.com").test_client()
    response = client.options(CREATE, headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert response.json["data"] == {"methods": ["OPTIONS", "POST"]}
    expect_every_answer_headers(response)


def test_json_is_utf8_not_escapes(customer, client):
    message = EMOJI * 10_000
    body = json.dumps({"data": {"email": customer.email, "created_at": 1, "message": message}},
                      ensure_ascii=False).encode("utf-8")
    assert len(body) < 41_000  # the request may be UTF-8 as well
    created = client.post(CREATE, data=body, content_type="application/json",
                          headers=customer.headers)
    assert created.status_code == 200, created.json
    response = customer.poll(created.json["data"]["chatId"])
    raw = response.get_data()
    assert 40_000 < len(raw) < 41_000  # 4 bytes an emoji, where \u escapes take 12
    assert EMOJI.encode("utf-8") in raw and b"\\ud83d" not in raw
    assert json.loads(raw.decode("utf-8"))["data"]["messages"][0]["message"] == message
    expect_every_answer_headers(response)


def test_a_lone_surrogate_goes_back_as_an_escape_still_json(customer, client):
    # A \ud800 escape in the JSON: Python reads it as a lone surrogate.
    body = json.dumps({"data": {"email": customer.email, "created_at": 1, "message": "hi",
                                "\ud800": 1}})
    response = client.post(CREATE, data=body, content_type="application/json",
                           headers=customer.headers)
    answer = assert_error(response, 400, "validation_error")
    assert answer["error"]["fields"] == {"\ud800": ["Unknown field."]}
    assert b'"\\ud800"' in response.get_data()


def test_an_unexpected_error_is_the_internal_error_envelope(customer, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(chats, "create_chat", explode)
    response = customer.post(CREATE, {"created_at": 1, "message": "hi"})
    assert_error(response, 500, "internal_error")
    expect_every_answer_headers(response)


# --- the OpenAPI document ------------------------------------------------------------------

@pytest.fixture
def document(client):
    return client.get("/api/openapi.json").json


def operations(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_every_operation_lists_the_errors_any_request_can_meet(document):
    for path, method, operation in operations(document):
        responses = operation["responses"]
        assert {"200", "405", "431", "500", "503"} <= set(responses), (path, method)
        assert ("401" in responses) == ("security" in operation), (path, method)
        # Only callers who present credentials can be rate limited (/healthz never is).
        assert ("429" in responses) == ("security" in operation), (path, method)
        assert ("413" in responses and "415" in responses) == ("requestBody" in operation)
        for code in ("429", "503"):
            if code in responses:
                assert "Retry-After" in responses[code]["headers"]
        for code, response in responses.items():
            schema = response["content"]["application/json"]["schema"]
            assert code == "200" or schema == {"$ref": "#/components/schemas/ErrorEnvelope"}


@pytest.mark.parametrize("path, method, has_404, has_409, has_422", [
    (CREATE, "post", False, True, True),
    ("/api/client/live/chat", "post", True, True, True),
    ("/api/client/live/messages", "post", True, False, False),
    ("/api/client/live/list", "post", False, False, False),
    ("/api/agent/chats", "get", False, False, False),
    ("/api/agent/chats/{chat_id}/messages", "post", True, True, True),
    ("/api/admin/users", "put", True, True, False),
    ("/healthz", "get", False, False, False),
])
def test_operation_specific_errors(document, path, method, has_404, has_409, has_422):
    responses = document["paths"][path][method]["responses"]
    assert ("404" in responses, "409" in responses, "422" in responses) == \
        (has_404, has_409, has_422)
