"""Idempotency-Key on create, chat and the agent reply: retries never duplicate."""
import datetime

import pytest

import models
from api import idempotency
from support.helpers import assert_error


def count_messages(app):
    with app.app_context():
        return models.Message.select().count()


def test_create_replays_the_first_answer(customer, app):
    headers = {"Idempotency-Key": "create-1"}
    data = {"created_at": 1, "message": "hello"}
    first = customer.post("/api/client/live/create", data, headers)
    again = customer.post("/api/client/live/create", data, headers)
    assert first.status_code == again.status_code == 200
    assert again.get_json() == first.get_json()
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    with app.app_context():
        assert models.Chat.select().count() == 1
    assert count_messages(app) == 1


def test_send_replays_and_stores_once(customer, app):
    chat_id = customer.create()
    headers = {"Idempotency-Key": "send-1"}
    answers = [customer.send(chat_id, "once", headers=headers) for _ in range(3)]
    assert len({a.json["data"]["messageId"] for a in answers}) == 1
    assert count_messages(app) == 2


def test_same_key_different_body_is_422(customer, app):
    chat_id = customer.create()
    headers = {"Idempotency-Key": "send-2"}
    assert customer.send(chat_id, "first", headers=headers).status_code == 200
    assert_error(customer.send(chat_id, "second", headers=headers), 422,
                 "idempotency_key_reused")
    assert_error(customer.post("/api/client/live/create", {"created_at": 1, "message": "first"},
                               headers), 422, "idempotency_key_reused")
    assert count_messages(app) == 2


def test_keys_belong_to_their_caller(make_customer, app):
    alice, bob = make_customer(), make_customer()
    headers = {"Idempotency-Key": "shared-key"}
    data = {"created_at": 1, "message": "hello"}
    a = alice.post("/api/client/live/create", data, headers)
    b = bob.post("/api/client/live/create", data, headers)
    assert a.status_code == b.status_code == 200
    assert a.json["data"]["chatId"] != b.json["data"]["chatId"]


def test_a_failed_request_is_not_remembered(customer, agent, app):
    chat_id = customer.create()
    agent.post(f"/chats/{chat_id}/close")
    headers = {"Idempotency-Key": "after-close"}
    assert_error(customer.send(chat_id, "hi", headers=headers), 409, "chat_closed")
    agent.post(f"/chats/{chat_id}/reopen")
    response = customer.send(chat_id, "hi", headers=headers)
    assert response.status_code == 200
    assert "Idempotent-Replayed" not in response.headers


def test_agent_reply_replays(customer, agent, app):
    chat_id = customer.create()
    headers = {"Idempotency-Key": "reply-1"}
    first = agent.reply(chat_id, "hello", headers=headers)
    again = agent.reply(chat_id, "hello", headers=headers)
    assert again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.json["data"]["seq"] == 2
    assert_error(agent.reply(chat_id, "other", headers=headers), 422, "idempotency_key_reused")
    assert count_messages(app) == 2


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\tkey", "é-key"])
def test_malformed_key_is_a_validation_error(customer, key, app):
    chat_id = customer.create()
    body = assert_error(customer.send(chat_id, "hi", headers={"Idempotency-Key": key}), 400,
                        "validation_error")
    assert list(body["error"]["fields"]) == ["Idempotency-Key"]
    assert count_messages(app) == 1


def test_longest_printable_key_is_accepted(customer):
    chat_id = customer.create()
    key = "".join(chr(32 + n % 95) for n in range(255))
    assert customer.send(chat_id, "hi", headers={"Idempotency-Key": key}).status_code == 200


def test_keys_are_kept_a_day_then_purged(customer, app, monkeypatch):
    chat_id = customer.create()
    headers = {"Idempotency-Key": "old-key"}
    assert customer.send(chat_id, "first", headers=headers).status_code == 200

    # 23 hours later the key still holds.
    with app.app_context():
        models.IdempotencyKey.update(
            created_at=models.utcnow() - datetime.timedelta(hours=23)).execute()
    monkeypatch.setattr(idempotency, "purger", idempotency.Purger())
    assert_error(customer.send(chat_id, "second", headers=headers), 422,
                 "idempotency_key_reused")

    # After 24 hours it is purged, and the key is free for a new request.
    with app.app_context():
        models.IdempotencyKey.update(
            created_at=models.utcnow() - datetime.timedelta(hours=24, minutes=1)).execute()
    monkeypatch.setattr(idempotency, "purger", idempotency.Purger())
    response = customer.send(chat_id, "second", headers=headers)
    assert response.status_code == 200
    assert "Idempotent-Replayed" not in response.headers
    with app.app_context():
        assert models.IdempotencyKey.select().count() == 1
