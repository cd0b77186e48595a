"""The agent API: support agents list chats, read them and reply, with their own tokens."""
from flask import Blueprint, current_app, g, request

import auth
import events
from api import answers, longpoll
from api.envelope import read_data, success
from api.idempotency import idempotent
from api.ratelimits import agent_calls
from auth import require_agent
from chat import chats, workspace
from chat.chats import AGENT
from models import CHAT_CLOSED, CHAT_OPEN
from schemas import (
    AgentChatsQuery,
    AgentEventsQuery,
    AgentMessagesQuery,
    AgentReadSchema,
    AgentReplySchema,
    AssignSchema,
    CustomerChatsQuery,
    NoQuery,
    NoteSchema,
    NotesQuery,
    RepliesQuery,
    SavedReplySchema,
)

bp = Blueprint("agent", __name__, url_prefix="/api/agent")

chats_query = AgentChatsQuery()
messages_query = AgentMessagesQuery()
events_query = AgentEventsQuery()
reply_schema = AgentReplySchema()
read_schema = AgentReadSchema()
assign_schema = AssignSchema()
note_schema = NoteSchema()
notes_query = NotesQuery()
replies_query = RepliesQuery()
saved_reply_schema = SavedReplySchema()
customer_query = CustomerChatsQuery()
no_query = NoQuery()


@bp.get("/chats")
@require_agent
@agent_calls
def list_chats():
    query = chats_query.load(request.args.to_dict())
    rows, next_before = chats.chat_list(AGENT, query["status"], query["before"], query["limit"],
                                        assignee=assignee_filter(query["assignee"]),
                                        order=query["sort"])
    return success("Chats.", answers.chat_page_json(rows, next_before, AGENT))


def assignee_filter(assignee):
    """`assignee=` as `chats.ChatListQuery` takes it."""
    if assignee == "any":
        return chats.ANYONE
    if assignee == "none":
        return chats.NOBODY
    return chats.assigned_to(g.agent.id if assignee == "me" else
                             workspace.any_agent_id(assignee))


@bp.get("/chats/counts")
@require_agent
@agent_calls
def count_chats():
    """The open chats in each of the inbox's tabs, and their unread messages."""
    no_query.load(request.args.to_dict())
    return success("Chat counts.", chats.open_chat_counts(g.agent))


@bp.get("/chats/<chat_id>")
@require_agent
@agent_calls
def get_chat(chat_id):
    rows, _ = chats.chat_list(AGENT, "all", None, 1, public_id=chat_id)
    if not rows:
        raise chats.ChatNotFound()
    return success("Chat.", answers.chat_json(rows[0], AGENT, detail=True))


def agent_poller():
    """An agent's polls wait only while the token works, a few at a time, and all agents'
    together within their share of the slots."""
    return longpoll.Poller(auth.caller_still_allowed, owner=f"agent:{g.agent.id}",
                           max_waiting=current_app.config["LONGPOLL_MAX_WAITERS_PER_AGENT"],
                           group=longpoll.AGENTS)


@bp.get("/chats/<chat_id>/messages")
@require_agent
@agent_calls
def poll_messages(chat_id):
    query = messages_query.load(request.args.to_dict())
    chat = chats.find_chat(chat_id)
    page = longpoll.poll(chat, longpoll.Cursor.of(query, current_app.config), query["wait"],
                         current_app.extensions["waiter_slots"],
                         agent_poller())
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
                                agent_poller())
    return success("Events.", answers.events_json(page), answers.poll_headers(page))


# --- the workspace: assignment, notes, saved replies, customers -------------------------------

@bp.get("/me")
@require_agent
@agent_calls
def who_am_i():
    no_query.load(request.args.to_dict())
    return success("You.", events.agent_json(g.agent))


@bp.get("/agents")
@require_agent
@agent_calls
def list_agents():
    no_query.load(request.args.to_dict())
    return success("Agents.", {"agents": workspace.active_agents_json()})


@bp.post("/chats/<chat_id>/assign")
@require_agent
@agent_calls
def assign_chat(chat_id):
    fields = assign_schema.load(read_data())
    chat = chats.find_chat(chat_id)
    assignee = workspace.assign(chat, fields["agent"], g.agent)
    return success("Chat assigned." if assignee else "Chat unassigned.",
                   {"chatId": chat.public_id, "assignee": events.agent_json(assignee)})


def load_note(chat_id):
    return {"fields": note_schema.load(read_data()), "chat": chats.find_chat(chat_id)}


@bp.post("/chats/<chat_id>/notes")
@require_agent
@agent_calls
@idempotent("Note saved.", prepare=load_note)
def write_note(fields, chat):
    note = workspace.add_note(chat, g.agent, fields["message"])
    return {"chatId": chat.public_id, "noteId": note.public_id, "after_seq": note.after_seq}


@bp.get("/chats/<chat_id>/notes")
@require_agent
@agent_calls
def read_notes(chat_id):
    query = notes_query.load(request.args.to_dict())
    chat = chats.find_chat(chat_id)
    return success("Notes.", answers.notes_json(chat, *workspace.notes_after(
        chat, query["after"], query["limit"], current_app.config["MAX_POLL_PAGE_BYTES"])))


@bp.get("/replies")
@require_agent
@agent_calls
def list_saved_replies():
    query = replies_query.load(request.args.to_dict())
    return success("Saved replies.", answers.replies_json(*workspace.saved_replies(
        query["after"], current_app.config["MAX_POLL_PAGE_BYTES"])))


@bp.put("/replies/<shortcut>")
@require_agent
@agent_calls
def save_reply(shortcut):
    fields = saved_reply_schema.load(read_data())
    reply, created = workspace.save_reply(shortcut, fields["text"], g.agent)
    return success("Saved reply created." if created else "Saved reply replaced.", reply)


@bp.delete("/replies/<shortcut>")
@require_agent
@agent_calls
def delete_reply(shortcut):
    workspace.delete_reply(shortcut)
    return success("Saved reply deleted.", {"shortcut": shortcut})


@bp.get("/customers/<path:email>")
@require_agent
@agent_calls
def customer(email):
    query = customer_query.load(request.args.to_dict())
    return success("Customer.", answers.customer_json(
        *workspace.customer_with_chats(email, query["before"], query["limit"])))
