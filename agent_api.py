"""The agent API: support agents list chats, read them and reply, with their own tokens."""
from flask import Blueprint, g, request

import answers
import chats
from auth import require_agent
from errors import envelope, read_data
from idempotency import answer_once
from models import CHAT_CLOSED, CHAT_OPEN, SENDER_AGENT, SENDER_USER, Chat
from schemas import AgentChatsQuery, AgentMessagesQuery, AgentReadSchema, AgentReplySchema

bp = Blueprint("agent", __name__, url_prefix="/api/agent")

chats_query = AgentChatsQuery()
messages_query = AgentMessagesQuery()
reply_schema = AgentReplySchema()
read_schema = AgentReadSchema()


def agent_chat_page(status, before, limit, public_id=None):
    return chats.chat_list(SENDER_USER, "agent_read_seq", status, before, limit,
                           public_id=public_id)


@bp.get("/chats")
@require_agent
def list_chats():
    query = chats_query.load(request.args.to_dict())
    page, next_before = agent_chat_page(query["status"], query["before"], query["limit"])
    return envelope("Chats.", {"chats": [answers.agent_chat_json(chat) for chat in page],
                               "next_before": next_before, "has_more": next_before is not None})


@bp.get("/chats/<chat_id>")
@require_agent
def get_chat(chat_id):
    page, _ = agent_chat_page("all", None, 1, public_id=chat_id)
    if not page:
        raise chats.ChatNotFound()
    return envelope("Chat.", answers.agent_chat_json(page[0], detail=True))


@bp.get("/chats/<chat_id>/messages")
@require_agent
def poll_messages(chat_id):
    query = messages_query.load(request.args.to_dict())
    return envelope("Messages.", answers.poll_page(chats.find_chat(chat_id), query, for_agent=True))


@bp.post("/chats/<chat_id>/messages")
@require_agent
def reply(chat_id):
    fields = reply_schema.load(read_data())
    chat = chats.find_chat(chat_id)

    def work():
        message = chats.add_message(chat, SENDER_AGENT, fields["message"], fields["image_url"],
                                    agent=g.agent)
        return {"chatId": chat.public_id, "messageId": message.public_id, "seq": message.seq}

    data, headers = answer_once(f"agent:{g.agent.id}", work)
    return envelope("Reply sent.", data, headers=headers)


@bp.post("/chats/<chat_id>/read")
@require_agent
def mark_read(chat_id):
    fields = read_schema.load(read_data())
    chat = chats.find_chat(chat_id)
    read_seq = chats.mark_read(chat, Chat.agent_read_seq, fields["seq"])
    return envelope("Read mark saved.", {
        "chatId": chat.public_id, "read_seq": read_seq,
        "unread": chats.count_unread(chat, SENDER_USER, Chat.agent_read_seq)})


def change_status(chat_id, status, message):
    chat = chats.find_chat(chat_id)
    chats.set_status(chat, status)
    return envelope(message, {"chatId": chat.public_id, "status": status})


@bp.post("/chats/<chat_id>/close")
@require_agent
def close_chat(chat_id):
    return change_status(chat_id, CHAT_CLOSED, "Chat closed.")


@bp.post("/chats/<chat_id>/reopen")
@require_agent
def reopen_chat(chat_id):
    return change_status(chat_id, CHAT_OPEN, "Chat reopened.")
