"""POST /api/client/live/create: opens a chat with its first message."""
import re

import models
from storage import queries
from support.helpers import assert_error

PUBLIC_ID = re.compile(r"\A(chat|msg)-[A-Za-z0-9_-]{22,}\Z")


def test_spec_example_creates_a_chat(customer, app):
    response = customer.post("/api/client/live/create", {
        "name": "Premium Plan", "plan_id": 5, "created_at": 1679223400,
        "message": "Hi, I have a quick question!"})

    assert response.status_code == 200
    body = response.json
    assert list(body) == ["status", "message", "data", "error"]
    assert body["status"] == "success"
    assert body["message"] == "Live chat session created successfully."
    assert body["error"] is None
    assert set(body["data"]) == {"chatId", "messageId"}
    assert PUBLIC_ID.match(body["data"]["chatId"]).group(1) == "chat"
    assert PUBLIC_ID.match(body["data"]["messageId"]).group(1) == "msg"

    with app.app_context():
        chat = models.Chat.get(models.Chat.public_id == body["data"]["chatId"])
        assert (chat.status, chat.name, chat.plan_id, chat.account_created_at) == (
            "open", "Premium Plan", 5, 1679223400)
        assert chat.user.email == "user@example.com"
        [message] = chat.messages
        assert (message.public_id, message.seq, message.sender, message.body,
                message.image_url) == (body["data"]["messageId"], 1, "user",
                                       "Hi, I have a quick question!", None)


def test_optional_fields_may_be_left_out_or_null(customer):
    response = customer.post("/api/client/live/create", {
        "created_at": 1679223400.75, "message": "hello", "name": None, "plan_id": None,
        "image_url": None})
    assert response.status_code == 200


def test_image_url_is_stored(customer, app):
    chat_id = customer.create(image_url="https://cdn.example.com/shot.png")
    with app.app_context():
        [message] = models.Chat.get(models.Chat.public_id == chat_id).messages
        assert message.image_url == "https://cdn.example.com/shot.png"


def test_ids_are_unique_and_not_row_numbers(customer):
    chat_ids = {customer.create() for _ in range(5)}
    assert len(chat_ids) == 5
    assert not any(chat_id.removeprefix("chat-").isdigit() for chat_id in chat_ids)


def test_failed_create_stores_nothing(customer, app, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("disk on fire")

    # The chat row is written first; the first message then fails.
    monkeypatch.setattr(queries.INSERT_MESSAGE, "execute", fail)
    response = customer.post("/api/client/live/create",
                             {"created_at": 1, "message": "lost?"})
    assert_error(response, 500, "internal_error")
    with app.app_context():
        assert models.Chat.select().count() == 0
