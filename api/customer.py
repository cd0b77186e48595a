"""The customer API: the two endpoints real client apps speak (create, chat: see
docs/customer-api.md), then polling for replies, the chat list, read marks and closing."""
from flask import Blueprint, current_app, g

import auth
from api import answers, longpoll
from api.envelope import read_data, success
from api.idempotency import idempotent
from api.ratelimits import customer_polls, customer_sends
from auth import require_user
from chat import chats
from chat.chats import CUSTOMER
from models import CHAT_CLOSED
from schemas import (
    ChatRefSchema,
    CreateChatSchema,
    ListChatsSchema,
    PollSchema,
    ReadSchema,
    SendMessageSchema,
)

bp = Blueprint("customer", __name__, url_prefix="/api/client/live")

create_chat_schema = CreateChatSchema()
send_message_schema = SendMessageSchema()
poll_schema = PollSchema()
list_chats_schema = ListChatsSchema()
read_schema = ReadSchema()
chat_ref_schema = ChatRefSchema()


def own_chat(fields):
    return chats.find_chat(fields["chat_id"], user=g.user)


def customer_poller():
    """A customer's polls wait only while they are still a user, and a few at a time."""
    return longpoll.Poller(auth.caller_still_allowed, owner=f"user:{g.user.id}",
                           max_waiting=current_app.config["LONGPOLL_MAX_WAITERS_PER_CUSTOMER"])


def load_create():
    return {"fields": create_chat_schema.load(read_data())}


def load_send():
    return {"fields": send_message_schema.load(read_data())}


@bp.post("/create")
@require_user
@customer_sends
@idempotent("Live chat session created successfully.", prepare=load_create)
def create_chat(fields):
    chat = chats.create_chat(g.user, name=fields["name"], plan_id=fields["plan_id"],
                             account_created_at=fields["created_at"], body=fields["message"],
                             image_url=fields["image_url"],
                             max_open=current_app.config["MAX_OPEN_CHATS"])
    return {"chatId": chat.public_id, "messageId": chat.message_id}


@bp.post("/chat")
@require_user
@customer_sends
@idempotent("Message sent successfully.", prepare=load_send)
def send_message(fields):
    message = chats.send_as_customer(g.user, fields["chat_id"], fields["message"],
                                     fields["image_url"])
    return {"chatId": fields["chat_id"], "messageId": message.public_id}


@bp.post("/messages")
@require_user
@customer_polls
def poll_messages():
    fields = poll_schema.load(read_data())
    chat = own_chat(fields)
    page = longpoll.poll(chat, longpoll.Cursor.of(fields, current_app.config), fields["wait"],
                         current_app.extensions["waiter_slots"], customer_poller())
    return success("Messages.", answers.poll_json(chat, fields["after"], page, CUSTOMER),
                   answers.poll_headers(page))


@bp.post("/list")
@require_user
@customer_polls
def list_chats():
    fields = list_chats_schema.load(read_data())
    rows, next_before = chats.chat_list(CUSTOMER, fields["status"], fields["before"],
                                        fields["limit"], user=g.user)
    return success("Chats.", answers.chat_page_json(rows, next_before, CUSTOMER))


@bp.post("/read")
@require_user
@customer_polls
def mark_read():
    fields = read_schema.load(read_data())
    chat = own_chat(fields)
    read_seq, unread = chats.mark_read(chat, CUSTOMER, fields["seq"])
    return success("Read mark saved.", answers.read_mark_json(chat, read_seq, unread))


@bp.post("/close")
@require_user
@customer_polls
def close_chat():
    chat = own_chat(chat_ref_schema.load(read_data()))
    status = chats.set_status(chat, CHAT_CLOSED)
    return success("Chat closed.", {"chatId": chat.public_id, "status": status})
