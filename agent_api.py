"""The agent API: support agents list chats, read them and reply, with their own tokens."""
from flask import Blueprint, current_app, g, request

import answers
import auth
import chats
import longpoll
from auth import require_agent
from chats import AGENT
from envelope import read_data, success
from idempotency import idempotent
from models import CHAT_CLOSED, CHAT_OPEN
from ratelimits import agent_calls
from schemas import (
    AgentChatsQuery,
    AgentEventsQuery,
    AgentMessagesQuery,
    AgentReadSchema,
    AgentReplySchema,
)

bp = Blueprint("agent", __name__, url_prefix="/api/agent")

chats_query = AgentChatsQuery()
messages_query = AgentMessagesQuery()
events_query = AgentEventsQuery()
reply_schema = AgentReplySchema()
read_schema = AgentReadSchema()


@bp.get("/chats")
@require_agent
@agent_calls
def list_chats():
    query = chats_query.load(request.args.to_dict())
    rows, next_before = chats.chat_list(AGENT, query["status"], query["before"], query["limit"])
    return success("Chats.", answers.chat_page_json(rows, next_before, AGENT))


@bp.get("/chats/<chat_id>")
@require_agent
@agent_calls
def get_chat(chat_id):
    rows, _ = chats.chat_list(AGENT, "all", None, 1, public_id=chat_id)
    if not rows:
        raise chats.ChatNotFound()
    return success("Chat.", answers.chat_json(rows[0], AGENT, detail=True))


@bp.get("/chats/<chat_id>/messages")
@require_agent
@agent_calls
def poll_messages(chat_id):
    query = messages_query.load(request.args.to_dict())
    chat = chats.find_chat(chat_id)
    page = longpoll.poll(chat, longpoll.Cursor.of(query, current_app.config), query["wait"],
                         current_app.extensions["waiter_slots"],
                         longpoll.Poller(auth.caller_still_allowed))
    return success("Messages.", answers.poll_json(chat, query["after"], page, AGENT),
                   answers.poll_headers(page))


def load_reply(chat_id):
    return {"fields": reply_schema.load(read_data()), "chat": chats.find_chat(chat_id)}


@bp.post("/chats/<chat_id>/messages")
@require_agent
@agent_calls
@idempotent("Reply sent.", prepare=load_reply)
def reply(fields, chat):
    message = chats.add_agent_reply(chat, g.agent, fields["message"], fields["image_url"])
    return {"chatId": chat.public_id, "messageId": message.public_id, "seq": message.seq}


@bp.post("/chats/<chat_id>/read")
@require_agent
@agent_calls
def mark_read(chat_id):
    fields = read_schema.load(read_data())
    chat = chats.find_chat(chat_id)
    read_seq, unread = chats.mark_read(chat, AGENT, fields["seq"], agent=g.agent)
    return success("Read mark saved.", answers.read_mark_json(chat, read_seq, unread))


def change_status(chat_id, status, message):
    chat = chats.find_chat(chat_id)
    return success(message, {"chatId": chat.public_id,
                             "status": chats.set_status(chat, status, agent=g.agent)})


@bp.post("/chats/<chat_id>/close")
@require_agent
@agent_calls
def close_chat(chat_id):
    return change_status(chat_id, CHAT_CLOSED, "Chat closed.")


@bp.post("/chats/<chat_id>/reopen")
@require_agent
@agent_calls
def reopen_chat(chat_id):
    return change_status(chat_id, CHAT_OPEN, "Chat reopened.")


@bp.get("/events")
@require_agent
@agent_calls
def follow_events():
    """The event log after `after`, waiting up to `wait` seconds for a first new event."""
    query = events_query.load(request.args.to_dict())
    page = longpoll.poll_events(query["after"], query["limit"],
                                current_app.config["MAX_POLL_PAGE_BYTES"], query["wait"],
                                current_app.extensions["waiter_slots"],
                                longpoll.Poller(auth.caller_still_allowed))
    return success("Events.", answers.events_json(page), answers.poll_headers(page))
