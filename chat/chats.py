"""Chats and messages: the rules behind the customer and agent APIs.

Guarantees kept here:
- each chat's messages are numbered 1, 2, 3, ... with no gap, and a message becomes visible
  only together with every message before it, so a reader that follows `seq` never skips one;
- a chat belongs to one customer, and another customer's chat is indistinguishable from one
  that does not exist;
- read marks only move forward.

These rules raise their own errors (below); `api/errors.py` maps them to HTTP answers. They know
nothing of HTTP, of request validation, or of the server.
"""
import base64
import binascii
import dataclasses
import datetime
import json
from typing import NamedTuple

import events
from models import (
    CHAT_OPEN,
    MAX_PUBLIC_ID_LENGTH,
    SENDER_AGENT,
    SENDER_USER,
    as_datetime,
    is_public_id,
    new_public_id,
    utcnow,
    write_transaction,
)
from storage import queries
from storage.changes import changes


@dataclasses.dataclass(frozen=True)
class Side:
    """One side of a conversation, customer or agent: its own read mark, whose messages it
    counts as unread, and how much it may see (the customer sees its own chats only, and no
    more of an agent than a display name)."""
    name: str
    read_mark: str  # the chat column holding this side's read mark
    unread_sender: str  # messages from this sender are unread until the mark passes them
    sees_everything: bool  # every chat, and the customer and agent details behind it

    @property
    def read_marks(self):
        return queries.READ_MARKS[self.read_mark]


CUSTOMER = Side("customer", "customer_read_seq", SENDER_AGENT, sees_everything=False)
AGENT = Side("agent", "agent_read_seq", SENDER_USER, sees_everything=True)


class ChatNotFound(Exception):
    """No chat with that id belongs to the caller (whether it exists for another user or not)."""


class ChatClosed(Exception):
    """The chat is closed; nothing more can be sent into it."""


class TooManyOpenChats(Exception):
    """The customer already has as many open chats as allowed."""


class SeqBeyondLast(Exception):
    """A read mark past the chat's last message."""

    def __init__(self, last_seq):
        super().__init__(f"Must be at most {last_seq}, the last message.")
        self.last_seq = last_seq


class InvalidCursor(Exception):
    """A list cursor this service did not make."""




# --- finding and changing chats ----------------------------------------------------------

def is_possible_chat_id(public_id):
    """Ids from a URL path are unvalidated: one no chat could have is not found at once, before
    it reaches the database (PostgreSQL refuses a NUL outright, and no driver can send a lone
    surrogate)."""
    if not 0 < len(public_id) <= MAX_PUBLIC_ID_LENGTH or "\x00" in public_id:
        return False
    try:
        public_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def find_chat(public_id, user=None):
    """The chat with that id (the user's own, when a user is given), as a `ChatRow`."""
    if not is_possible_chat_id(public_id):
        raise ChatNotFound()
    chat = (queries.FIND_OWN_CHAT.one(public_id, user.id) if user is not None
            else queries.FIND_CHAT.one(public_id))
    if chat is None:
        raise ChatNotFound()
    return chat


class StoredMessage(NamedTuple):
    public_id: str
    seq: int
    sender: str
    body: str
    image_url: str | None
    agent: object  # the agent who wrote it (its name and display_name), or None
    created_at: datetime.datetime


def insert_message(chat_id, seq, sender, body, image_url, agent, now):
    """Store a message with its seq; its `StoredMessage`. (Its event is the caller's to
    record, after any event that must come first.)"""
    message = StoredMessage(new_public_id("msg"), seq, sender, body, image_url, agent, now)
    queries.INSERT_MESSAGE.execute(message.public_id, chat_id, seq, sender,
                                   None if agent is None else agent.id, body, image_url, now)
    changes.announce_after_commit(chat_id, now)
    return message


class NewChat(NamedTuple):
    public_id: str
    message_id: str


class NewMessage(NamedTuple):
    public_id: str
    seq: int


def create_chat(user, name, plan_id, account_created_at, body, image_url=None, max_open=None):
    """Open a chat and store its first message, both or neither; at most `max_open` open chats
    per customer."""
    with write_transaction():
        if max_open is not None:
            queries.lock_user(user.id)  # concurrent creates by one customer count in turn
            if queries.COUNT_OPEN_CHATS.value(user.id, CHAT_OPEN) >= max_open:
                raise TooManyOpenChats()
        now = utcnow()
        public_id = new_public_id("chat")
        chat_id = queries.INSERT_CHAT.value(public_id, user.id, CHAT_OPEN, name, plan_id,
                                            account_created_at, now, now, now)
        message = insert_message(chat_id, 1, SENDER_USER, body, image_url, None, now)
        chat = events.chat_summary(public_id, CHAT_OPEN, name, plan_id, user.email, user.name)
        events.chat_created(chat_id, chat)
        events.message_created(chat_id, chat, message)
    return NewChat(public_id, message.public_id)


def add_agent_reply(chat, agent, body, image_url=None):
    """Append an agent's message to an open chat with the next gap-free `seq`."""
    with write_transaction():
        now = utcnow()
        bumped = queries.BUMP_CHAT.one(now, chat.id, CHAT_OPEN)
        if bumped is None:
            raise ChatClosed()
        message = insert_message(bumped.id, bumped.last_seq, SENDER_AGENT, body, image_url,
                                 agent, now)
        customer = queries.CUSTOMER_OF.one(bumped.user_id)
        events.message_created(bumped.id, bumped_summary(bumped, customer), message)
    return NewMessage(message.public_id, bumped.last_seq)


def send_as_customer(user, public_id, body, image_url=None):
    """Append a customer's message to their own open chat, found and bumped in one statement.
    """
    if not is_possible_chat_id(public_id):
        raise ChatNotFound()
    with write_transaction():
        now = utcnow()
        bumped = queries.BUMP_OWN_CHAT.one(now, now, public_id, user.id, CHAT_OPEN)
        if bumped is None:
            find_chat(public_id, user)  # raises ChatNotFound when it is not theirs
            raise ChatClosed()
        message = insert_message(bumped.id, bumped.last_seq, SENDER_USER, body, image_url,
                                 None, now)
        events.message_created(bumped.id, bumped_summary(bumped, user), message)
    return NewMessage(message.public_id, bumped.last_seq)


def bumped_summary(bumped, customer):
    """The event's view of a chat a message just went into (its customer: email, name)."""
    return events.chat_summary(bumped.public_id, CHAT_OPEN, bumped.name, bumped.plan_id,
                               customer.email, customer.name)


def set_status(chat, status, agent=None):
    """Close or reopen a chat, as `agent` or (None) its customer; doing it twice changes
    nothing the second time."""
    with write_transaction():
        now = utcnow()
        if queries.SET_STATUS.execute(status, now, chat.id, status).rowcount:
            changes.announce_after_commit(chat.id, now, status_changed=True)
            events.status_changed(chat.id, status, agent)
    return status


def mark_read(chat, side, seq, agent=None):
    """Move `side`'s read mark forward to `seq` (never back), as `agent` on the agents' side:
    (mark now stored, unread)."""
    marks = side.read_marks
    with write_transaction():
        last_seq = queries.LAST_SEQ.value(chat.id)
        if seq > last_seq:
            raise SeqBeyondLast(last_seq)
        moved = marks.advance.execute(seq, chat.id, seq).rowcount
        mark = marks.current.value(chat.id)
        unread = marks.unread.value(chat.id, side.unread_sender)
        if moved:
            events.read_mark_moved(chat.id, seq, agent)
    return mark, unread


# --- reading messages --------------------------------------------------------------------

def messages_after(chat_id, after, limit, max_bytes=None):
    """(message rows with seq > after in order, has_more): at most `limit` messages, and no
    more than `max_bytes` of them as sent (`sent_bytes`), except that a page always holds the
    first one. A page cut short ends before the message that would cross the bound, so a
    reader that goes on after its last seq still sees every message once."""
    rows = queries.MESSAGES_AFTER.all(chat_id, after, limit + 1)
    count = min(len(rows), limit)
    if max_bytes is not None and most_sent_bytes(rows[:count]) > max_bytes:
        size = 0
        for index, row in enumerate(rows[:count]):
            size += sent_bytes(row)
            if size > max_bytes and index > 0:
                count = index
                break
    return rows[:count], len(rows) > count


# A message object's keys, punctuation, seq, sender and timestamp in an answer (api/answers.py),
# as JSON, with room to spare: about 150 bytes.
MESSAGE_OVERHEAD_BYTES = 200


def sent_bytes(row):
    """About the size a message takes in an answer's JSON: its strings as sent, in UTF-8 and
    escaped (a control character is 6 bytes, "\\u0001"; a quote 2), and the rest of the object
    (`MESSAGE_OVERHEAD_BYTES`). 10,000 emoji are 40 KB; 10,000 U+0001 are 60 KB."""
    strings = (row.public_id, row.body, row.image_url, row.agent_name, row.agent_display_name)
    return MESSAGE_OVERHEAD_BYTES + sum(json_bytes(value) for value in strings)


def most_sent_bytes(rows):
    """An upper bound of the rows' `sent_bytes`, at a fraction of its cost: in JSON no character
    takes more than 6 bytes ("\\u0001"; UTF-8 takes at most 4), and each string 2 quotes. A
    page whose bound fits needs no exact measure."""
    return sum(MESSAGE_OVERHEAD_BYTES + 10 + 6 * (
        len(row.public_id) + len(row.body) + len(row.image_url or "")
        + len(row.agent_name or "") + len(row.agent_display_name or "")) for row in rows)


def json_bytes(value):
    """The bytes of `value` in JSON as api/envelope.py writes it (UTF-8, not \\u-escaped)."""
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def current_status(chat_id):
    return queries.CHAT_STATUS.value(chat_id)


# --- chat lists ---------------------------------------------------------------------------

class Assignee(NamedTuple):
    """Whose chats a list holds: anyone's (`ANYONE`), nobody's (`NOBODY`), or one agent's
    (`assigned_to(agent_id)`)."""
    mode: str
    agent_id: int | None = None


ANYONE = Assignee(queries.ANY_ASSIGNEE)
NOBODY = Assignee(queries.NO_ASSIGNEE)


def assigned_to(agent_id):
    return Assignee(queries.ONE_ASSIGNEE, agent_id)


class ChatListQuery(NamedTuple):
    """Which page of which chats: `status` open, closed or all; whose (an `Assignee`);
    `order` "recent" (the latest activity first) or "waiting" (chats whose customer waits,
    the longest first); `before`, a cursor."""
    status: str = "all"
    before: str | None = None
    limit: int = 20
    user: object = None  # only this customer's chats
    public_id: str | None = None  # only the chat with this id
    assignee: Assignee = ANYONE
    order: str = "recent"
# A cursor records the list order it came from: one of a "waiting" list is marked so.
WAITING_CURSOR = "waiting"


def encode_cursor(row, order="recent"):
    """Where the next page starts: the last row's time in the list's order and its public id
    (never the row id, which would let a customer count every chat in the system)."""
    if order == "waiting":
        raw = f"{WAITING_CURSOR}|{as_datetime(row.waiting_since).isoformat()}|{row.public_id}"
    else:
        raw = f"{as_datetime(row.updated_at).isoformat()}|{row.public_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor, order="recent"):
    """(time, public id) of a cursor `encode_cursor` made; `InvalidCursor` for anything else.
    (A well-formed id that no chat has pages on by the time alone.)"""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if order == "waiting":
            marker, stamp, public_id = raw.split("|", 2)
            if marker != WAITING_CURSOR:
                raise ValueError("not a cursor of a waiting list")
        else:
            stamp, public_id = raw.split("|", 1)
        stamp = datetime.datetime.fromisoformat(stamp)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        stamp = public_id = None
    # Cursors are made here, so anything else is forged: an id no chat could have, or a time
    # that is not our naive UTC.
    # (Only an id `create_chat` gives a chat can be named by a cursor.)
    if public_id is None or not is_public_id(public_id, "chat") or stamp.tzinfo is not None:
        raise InvalidCursor()
    return stamp, public_id


def chat_list_call(side, query):
    """(statement, parameters) of a list query, as `side` sees it."""
    list_filter = queries.ListFilter(
        by_status=query.status != "all", by_user=query.user is not None,
        by_public_id=query.public_id is not None, assignee=query.assignee.mode,
        order=query.order, before=bool(query.before))
    statement = queries.chat_list_statement(side.read_mark, list_filter)
    params = [side.unread_sender]
    params += [query.status] if list_filter.by_status else []
    params += [query.user.id] if list_filter.by_user else []
    params += [query.public_id] if list_filter.by_public_id else []
    params += [query.assignee.agent_id] if query.assignee.agent_id is not None else []
    if query.before:
        stamp, public_id = decode_cursor(query.before, query.order)
        params += [stamp, stamp, public_id]
    return statement, params + [query.limit + 1]


def open_chat_counts(agent):
    """The open chats in the inbox's tabs (the agent's own, nobody's, all), and the unread
    messages in each."""
    row = queries.CHAT_COUNTS.one(AGENT.unread_sender, CHAT_OPEN, agent.id, agent.id)
    return {"mine": row.mine, "unassigned": row.unassigned, "all": row.all_chats,
            # (int: PostgreSQL's SUM of counts is a numeric)
            "unread": {"mine": int(row.mine_unread), "unassigned": int(row.unassigned_unread),
                       "all": int(row.all_unread)}}


def chat_list(side, status, before, limit, user=None, public_id=None, **options):
    """A page of chats, most recent activity first (or as `options` say: see
    `ChatListQuery`): (rows, next cursor or None). A customer's list holds only their own
    chats; with `public_id`, the one chat with that id (none, and `ChatNotFound`, for an id no
    chat could have)."""
    if not side.sees_everything and user is None:
        raise ValueError("a customer's list needs its customer")
    if public_id is not None and not is_possible_chat_id(public_id):
        raise ChatNotFound()
    query = ChatListQuery(status, before, limit, user, public_id, **options)
    statement, params = chat_list_call(side, query)
    rows = statement.all(*params)
    page = rows[:limit]
    return page, encode_cursor(page[-1], query.order) if len(rows) > limit else None
