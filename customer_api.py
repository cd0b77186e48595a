"""The customer API: the two endpoints of `shared/spec/live-chat-api.md`, then polling for
replies, the chat list, read marks and closing."""
from flask import Blueprint, current_app, g

import answers
import chats
from auth import require_user
from errors import envelope, read_data
from idempotency import answer_once
from ratelimits import customer_sends
from models import CHAT_CLOSED, SENDER_AGENT, Chat
from schemas import (ChatRefSchema, CreateChatSchema, ListChatsSchema, PollSchema, ReadSchema,
                     SendMessageSchema)

bp = Blueprint("customer", __name__, url_prefix="/api/client/live")

create_chat_schema = CreateChatSchema()
send_message_schema = SendMessageSchema()
poll_schema = PollSchema()
list_chats_schema = ListChatsSchema()
read_schema = ReadSchema()
chat_ref_schema = ChatRefSchema()


def own_chat(fields):
    return chats.find_chat(fields["chat_id"], user=g.user)


@bp.post("/create")
@require_user
@customer_sends
def create_chat():
    fields = create_chat_schema.load(read_data())

    def work():
        chat, message = chats.create_chat(
            g.user, name=fields["name"], plan_id=fields["plan_id"],
            account_created_at=fields["created_at"], body=fields["message"],
            image_url=fields["image_url"], max_open=current_app.config["MAX_OPEN_CHATS"])
        return {"chatId": chat.public_id, "messageId": message.public_id}

    data, headers = answer_once(f"user:{g.user.id}", work)
    return envelope("Live chat session created successfully.", data, headers=headers)


@bp.post("/chat")
@require_user
@customer_sends
def send_message():
    fields = send_message_schema.load(read_data())

    def work():
        message = chats.send_as_customer(g.user, fields["chat_id"], fields["message"],
                                         fields["image_url"])
        return {"chatId": fields["chat_id"], "messageId": message.public_id}

    data, headers = answer_once(f"user:{g.user.id}", work)
    return envelope("Message sent successfully.", data, headers=headers)


@bp.post("/messages")
@require_user
def poll_messages():
    fields = poll_schema.load(read_data())
    return envelope("Messages.", answers.poll_page(own_chat(fields), fields, for_agent=False))


@bp.post("/list")
@require_user
def list_chats():
    fields = list_chats_schema.load(read_data())
    page, next_before = chats.chat_list(SENDER_AGENT, "customer_read_seq", fields["status"],
                                        fields["before"], fields["limit"], user=g.user)
    return envelope("Chats.", {"chats": [answers.customer_chat_json(chat) for chat in page],
                               "next_before": next_before, "has_more": next_before is not None})


@bp.post("/read")
@require_user
def mark_read():
    fields = read_schema.load(read_data())
    chat = own_chat(fields)
    read_seq = chats.mark_read(chat, Chat.customer_read_seq, fields["seq"])
    return envelope("Read mark saved.", {
        "chatId": chat.public_id, "read_seq": read_seq,
        "unread": chats.count_unread(chat, SENDER_AGENT, Chat.customer_read_seq)})


@bp.post("/close")
@require_user
def close_chat():
    chat = own_chat(chat_ref_schema.load(read_data()))
    chats.set_status(chat, CHAT_CLOSED)
    return envelope("Chat closed.", {"chatId": chat.public_id, "status": chat.status})
