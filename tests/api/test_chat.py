"""POST /api/client/live/chat: every following message of a chat."""
import models
from support.helpers import assert_error


def test_spec_example_sends_a_message(customer, app):
    chat_id = customer.create()
    response = customer.send(chat_id, "Where can I find my subscription URL?")

    assert response.status_code == 200
    body = response.json
    assert body == {
        "status": "success",
        "message": "Message sent successfully.",
        "data": {"chatId": chat_id, "messageId": body["data"]["messageId"]},
        "error": None,
    }
    assert body["data"]["messageId"].startswith("msg-")
    with app.app_context():
        message = models.Message.get(models.Message.public_id == body["data"]["messageId"])
        assert (message.seq, message.sender, message.body) == (
            2, "user", "Where can I find my subscription URL?")


def test_messages_get_consecutive_seq(customer, app):
    chat_id = customer.create()
    for text in ["two", "three", "four"]:
        assert customer.send(chat_id, text).status_code == 200
    with app.app_context():
        chat = models.Chat.get(models.Chat.public_id == chat_id)
        rows = [(m.seq, m.body) for m in chat.messages.order_by(models.Message.seq)]
    assert rows == [(1, "Hi, I have a quick question!"), (2, "two"), (3, "three"), (4, "four")]


def test_image_url_is_optional(customer):
    chat_id = customer.create()
    response = customer.send(chat_id, "see picture", image_url="http://example.com/a.png")
    assert response.status_code == 200


def test_unknown_chat_is_not_found(customer):
    assert_error(customer.send("chat-doesnotexistatallxxxxx"), 404, "chat_not_found")


def test_another_users_chat_answers_exactly_like_a_missing_one(make_customer):
    alice, mallory = make_customer(), make_customer()
    chat_id = alice.create()

    foreign = mallory.send(chat_id, "let me in")
    missing = mallory.send("chat-" + "x" * 22, "let me in")

    assert_error(foreign, 404, "chat_not_found")
    assert foreign.get_data() == missing.get_data()
    assert alice.send(chat_id, "still mine").status_code == 200


def test_closed_chat_refuses_messages_and_keeps_its_history(customer, app):
    chat_id = customer.create()
    with app.app_context():
        models.Chat.update(status=models.CHAT_CLOSED).where(
            models.Chat.public_id == chat_id).execute()

    assert_error(customer.send(chat_id, "anyone?"), 409, "chat_closed")
    with app.app_context():
        assert models.Message.select().count() == 1
