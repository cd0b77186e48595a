"""Which error wins when a request is wrong in several ways: the body and its fields are
judged (and the chat looked up) before the Idempotency-Key, exactly as without a key."""
import pytest

from support.helpers import assert_error

KEY = {"Idempotency-Key": "retry-1"}
BAD_KEY = {"Idempotency-Key": "\x7f"}


@pytest.mark.parametrize("path,data", [
    ("/api/client/live/create", {"created_at": 1, "message": "hi", "bogus": 1}),
    ("/api/client/live/chat", {"chat_id": "chat-x", "message": ""}),
])
def test_invalid_fields_win_over_a_malformed_key(customer, path, data):
    body = assert_error(customer.post(path, data, headers=BAD_KEY), 400, "validation_error")
    assert "Idempotency-Key" not in body["error"]["fields"]


def test_reused_key_with_an_invalid_body_is_a_validation_error(customer):
    chat_id = customer.create()
    assert customer.send(chat_id, "first", headers=KEY).status_code == 200
    body = assert_error(customer.send(chat_id, "", headers=KEY), 400, "validation_error")
    assert list(body["error"]["fields"]) == ["message"]


@pytest.mark.parametrize("raw,content_type,status,code", [
    ("x", "text/plain", 415, "unsupported_media_type"),
    ("{", "application/json", 400, "invalid_json"),
    ('{"data": {"message": ""}}', "application/json", 400, "validation_error"),
])
def test_agent_reply_body_errors_win_over_a_malformed_key(agent, customer, raw, content_type,
                                                          status, code):
    chat_id = customer.create()
    response = agent.client.post(f"/api/agent/chats/{chat_id}/messages", data=raw,
                                 content_type=content_type, headers={**agent.headers, **BAD_KEY})
    assert_error(response, status, code)


@pytest.mark.parametrize("headers", [BAD_KEY, KEY])
def test_agent_reply_to_an_unknown_chat_is_404_whatever_the_key(agent, customer, headers):
    chat_id = customer.create()
    assert agent.reply(chat_id, "first", headers=KEY).status_code == 200
    assert_error(agent.reply("chat-unknown", "first", headers=headers), 404, "chat_not_found")
