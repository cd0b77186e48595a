"""The customer API of `shared/spec/live-chat-api.md`: what the client app calls."""
from flask import Blueprint, g

import models
from auth import require_user
from errors import envelope, read_data
from schemas import CreateChatSchema, SendMessageSchema

bp = Blueprint("customer", __name__, url_prefix="/api/client/live")

create_chat_schema = CreateChatSchema()
send_message_schema = SendMessageSchema()


@bp.post("/create")
@require_user
def create_chat():
    fields = create_chat_schema.load(read_data())
    chat, message = models.create_chat(
        g.user, name=fields["name"], plan_id=fields["plan_id"],
        account_created_at=fields["created_at"], body=fields["message"],
        image_url=fields["image_url"])
    return envelope("Live chat session created successfully.",
                    {"chatId": chat.public_id, "messageId": message.public_id})


@bp.post("/chat")
@require_user
def send_message():
    fields = send_message_schema.load(read_data())
    chat = models.find_chat(g.user, fields["chat_id"])
    message = models.add_message(chat, models.SENDER_USER, fields["message"],
                                 fields["image_url"])
    return envelope("Message sent successfully.",
                    {"chatId": chat.public_id, "messageId": message.public_id})
