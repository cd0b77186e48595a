"""Every failure is a JSON envelope with a stable code, never an HTML page."""
import logging

import pytest

from chat import chats
from support.helpers import assert_error

CREATE = "/api/client/live/create"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
def test_non_json_content_type_is_415(client, content_type):
    response = client.post(CREATE, data="{}", content_type=content_type)
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize("raw", [
    "", "{", "not json", "[]", '"data"', "null", "42", "{}", '{"data": null}',
    '{"data": []}', '{"data": "x"}', '{"other": {}}', b"\xff\xfe{}",
    pytest.param("[" * 30_000 + "]" * 30_000, id="deeply-nested"),
])
def test_malformed_body_is_invalid_json(client, raw):
    response = client.post(CREATE, data=raw, content_type="application/json")
    assert_error(response, 400, "invalid_json")


def test_oversized_body_is_413(client, customer):
    response = customer.post(CREATE, {"created_at": 1, "message": "x" * (70 * 1024)})
    assert_error(response, 413, "payload_too_large")


def test_body_limit_is_configurable(make_app):
    client = make_app(MAX_CONTENT_LENGTH=200).test_client()
    response = client.post(CREATE, json={"data": {"message": "x" * 300}})
    assert_error(response, 413, "payload_too_large")


def test_unknown_route_is_404(client):
    assert_error(client.get("/nowhere"), 404, "not_found")
    assert_error(client.post("/api/client/live/nothing", json={"data": {}}), 404, "not_found")


def test_wrong_method_is_405(client):
    response = client.get(CREATE)
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_unexpected_error_is_500_without_internals(customer, monkeypatch, caplog):
    def explode(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(chats, "create_chat", explode)
    with caplog.at_level(logging.ERROR):
        response = customer.post(CREATE, {"created_at": 1, "message": "hi"})
    body = assert_error(response, 500, "internal_error")
    assert "secret" not in response.get_data(as_text=True)
    assert body["error"] == {"code": "internal_error"}
    assert "secret internals" in caplog.text and "Traceback" in caplog.text


def test_errors_never_leak_the_uuid(customer, client):
    for response in [customer.post(CREATE, {"created_at": -1, "message": ""}),
                     customer.send("chat-missing"),
                     client.get("/nowhere")]:
        assert customer.uuid not in response.get_data(as_text=True)
