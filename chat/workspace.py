"""The agents' workspace: who has a chat, internal notes, saved replies, and the customer
beside a chat.

Guarantees kept here:
- a note never reaches the customer: notes live apart from messages, take no `seq`, move no
  read mark, touch no `updated_at` and wake no customer's poll; only agents (and webhooks
  that ask for them) learn of one;
- a chat is given only to an active agent; giving it to whoever has it already changes
  nothing and writes no event.

Like chat/chats.py, these rules raise their own errors and know nothing of HTTP. They are cold
paths, written with peewee's query builder (storage/queries.py holds the hot ones).
"""
import re
from typing import NamedTuple

from peewee import JOIN

import events
from chat import accounts, chats
from models import (
    Agent,
    Chat,
    Note,
    SavedReply,
    User,
    as_datetime,
    iso_utc,
    new_public_id,
    utcnow,
    write_transaction,
)
from storage import queries

SHORTCUT = re.compile(r"[A-Za-z0-9_-]{1,32}", re.ASCII)
MAX_SAVED_REPLIES = 500


class UnknownAgent(Exception):
    """No active agent has the name a chat was to be given to."""


class UnknownAssignee(Exception):
    """No agent, active or removed, has the name a list was to be filtered by."""


class CustomerNotFound(Exception):
    """No customer has that email."""


class SavedReplyNotFound(Exception):
    """No saved reply has that shortcut."""


class TooManySavedReplies(Exception):
    """The shared list of saved replies is full."""


class InvalidShortcut(Exception):
    """A shortcut that is not 1 to 32 letters, digits, - or _."""


# --- agents and assignment ---------------------------------------------------------------

def active_agent(name):
    """The active agent named `name` (exactly: names are case-sensitive), or UnknownAgent."""
    agent = Agent.get_or_none((Agent.name == name) & Agent.token_digest.is_null(False))
    if agent is None:
        raise UnknownAgent()
    return agent


def any_agent_id(name):
    """The id of the agent named `name`, removed ones included (their chats stay theirs):
    for list filters. UnknownAgent when no agent ever had the name."""
    agent = Agent.get_or_none(Agent.name == name)
    if agent is None:
        raise UnknownAssignee()
    return agent.id


def assign(chat, assignee_name, by_agent):
    """Give `chat` to the active agent named `assignee_name`, or to nobody (None), as
    `by_agent`. Returns the assignee (an Agent, or None)."""
    with write_transaction():
        # (Looked up inside: an agent removed a moment before is refused, not given chats.)
        assignee = None if assignee_name is None else active_agent(assignee_name)
        if assignee is None:
            changed = Chat.update(assignee=None).where(
                (Chat.id == chat.id) & Chat.assignee.is_null(False)).execute()
        else:
            changed = Chat.update(assignee=assignee.id).where(
                (Chat.id == chat.id)
                & (Chat.assignee.is_null() | (Chat.assignee != assignee.id))).execute()
        if changed:
            events.assigned(chat.id, assignee, by_agent)
    return assignee


def active_agents_json():
    return [events.agent_json(agent) for agent in accounts.active_agents()]


# --- notes -------------------------------------------------------------------------------

class NewNote(NamedTuple):
    public_id: str
    after_seq: int


def note_json(public_id, after_seq, body, agent, created_at):
    return {"noteId": public_id, "after_seq": after_seq, "message": body,
            "agent": events.agent_json(agent), "created_at": iso_utc(created_at)}


def add_note(chat, agent, body):
    """Write an internal note on `chat` (open or closed), placed after its newest message."""
    with write_transaction():
        now = utcnow()
        number, after_seq = queries.NEXT_NOTE.one(chat.id)
        public_id = new_public_id("note")
        Note.insert(public_id=public_id, chat=chat.id, number=number, agent=agent.id,
                    after_seq=after_seq, body=body, created_at=now).execute()
        events.note_created(chat.id, note_json(public_id, after_seq, body, agent, now))
    return NewNote(public_id, after_seq)


def notes_after(chat, after, limit, max_bytes):
    """(the chat's notes numbered after `after`, oldest first, as JSON; the number to ask
    after next; whether more follow): at most `limit` notes and about `max_bytes` of them."""
    rows = (Note.select(Note.number, Note.public_id, Note.after_seq, Note.body,
                        Note.created_at, Agent.name, Agent.display_name)
            .join(Agent).where((Note.chat == chat.id) & (Note.number > after))
            .order_by(Note.number).limit(limit + 1))
    notes = ((note.number, note_json(note.public_id, note.after_seq, note.body, note.agent,
                                     as_datetime(note.created_at))) for note in rows)
    page, has_more = page_within_bytes(notes, max_bytes, limit, shown=lambda pair: pair[1])
    return [note for _, note in page], page[-1][0] if page else after, has_more


def page_within_bytes(items, max_bytes, limit=None, shown=lambda item: item):
    """(the first of `items` that a page holds, whether any is left out): at most `limit` of
    them and about `max_bytes` of their JSON (`shown(item)`), the first always, so that a
    reader going on after the last one sees every item once. `items` are taken only as far
    as the page goes."""
    page, size = [], 0
    for item in items:
        size += chats.json_bytes(shown(item)) + 1  # and a comma
        if len(page) == limit or (size > max_bytes and page):
            return page, True
        page.append(item)
    return page, False


# --- saved replies -----------------------------------------------------------------------

def checked_shortcut(shortcut):
    if not SHORTCUT.fullmatch(shortcut):
        raise InvalidShortcut()
    return shortcut


def saved_reply_json(reply):
    return {"shortcut": reply.shortcut, "text": reply.text,
            "updated_at": iso_utc(as_datetime(reply.updated_at)),
            "updated_by": events.agent_json(reply.updated_by)}


def saved_replies(after, max_bytes):
    """(the saved replies whose shortcut sorts after `after` (None: from the first), by
    shortcut, within about `max_bytes` of JSON; the shortcut to ask after next; whether more
    follow). 500 replies of 10,000 characters would be 20 MB in one answer."""
    query = SavedReply.select(SavedReply, Agent).join(Agent, JOIN.LEFT_OUTER)
    if after is not None:
        query = query.where(SavedReply.shortcut > after)
    replies = (saved_reply_json(reply) for reply in query.order_by(SavedReply.shortcut))
    page, has_more = page_within_bytes(replies, max_bytes)
    return page, page[-1]["shortcut"] if page else after, has_more


def save_reply(shortcut, text, agent):
    """Create or replace the saved reply `shortcut`: (its JSON, whether it is new)."""
    checked_shortcut(shortcut)
    with write_transaction():
        queries.lock_saved_replies()  # saves take turns: the count below stays true
        now = utcnow()
        replaced = SavedReply.update(text=text, updated_by=agent.id, updated_at=now).where(
            SavedReply.shortcut == shortcut).execute()
        if not replaced:
            if SavedReply.select().count() >= MAX_SAVED_REPLIES:
                raise TooManySavedReplies()
            SavedReply.insert(shortcut=shortcut, text=text, updated_by=agent.id,
                              created_at=now, updated_at=now).execute()
    # (Built from what was written: a delete right after the commit cannot fail the answer.)
    return {"shortcut": shortcut, "text": text, "updated_at": iso_utc(now),
            "updated_by": events.agent_json(agent)}, not replaced


def delete_reply(shortcut):
    checked_shortcut(shortcut)
    with write_transaction():
        if not SavedReply.delete().where(SavedReply.shortcut == shortcut).execute():
            raise SavedReplyNotFound()


# --- the customer beside a chat ----------------------------------------------------------

def customer_with_chats(email, before, limit):
    """The customer with this email (removed ones too: agents keep their history), and a page
    of their chats, most recent first: (customer JSON, chat rows, next cursor)."""
    email = accounts.normalize_email(email)
    # (A URL can carry what no stored email holds: PostgreSQL would refuse a NUL outright.)
    user = User.get_or_none(User.email == email) if accounts.is_possible_email(email) else None
    if user is None:
        raise CustomerNotFound()
    their_chats = Chat.select().where(Chat.user == user.id)
    latest = their_chats.order_by(Chat.created_at.desc(), Chat.id.desc()).first()
    first = their_chats.order_by(Chat.created_at, Chat.id).first()
    customer = {
        "email": user.email, "name": user.name,
        "plan_name": latest.name if latest else None,
        "plan_id": latest.plan_id if latest else None,
        "account_created_at": latest.account_created_at if latest else None,
        # When they first wrote to support (not when they were provisioned).
        "first_seen": iso_utc(as_datetime(first.created_at)) if first else None}
    rows, next_before = chats.chat_list(chats.AGENT, "all", before, limit, user=user)
    return customer, rows, next_before
