"""Chats and messages: the rules behind the customer and agent APIs.

Guarantees kept here:
- each chat's messages are numbered 1, 2, 3, ... with no gap, and a message becomes visible
  only together with every message before it, so a reader that follows `seq` never skips one;
- a chat belongs to one customer, and another customer's chat is indistinguishable from one
  that does not exist;
- read marks only move forward.
"""
import base64
import binascii
import contextlib
import dataclasses
import datetime
import threading
import time
from typing import NamedTuple

from marshmallow import ValidationError

from lane import request_lane
from models import (CHAT_OPEN, SENDER_USER, Chat, Message, Statement, database, lock_user,
                    new_public_id, utcnow, write_transaction)

MAX_CHAT_ID_LENGTH = 64
CROSS_PROCESS_POLL_SECONDS = 0.5  # a long-poll re-reads this often for writes by other processes
PREVIEW_LENGTH = 200


@dataclasses.dataclass(slots=True)
class ChatRow:
    """A chat as the request handlers use it: built on every request, so a plain object rather
    than a model instance, which costs several times more to build."""
    id: int
    public_id: str
    user_id: int
    status: str
    last_seq: int = 0
    customer_read_seq: int = 0
    agent_read_seq: int = 0


class NewMessage(NamedTuple):
    public_id: str
    seq: int


class ChatNotFound(Exception):
    """No chat with that id belongs to the caller (whether it exists for another user or not)."""


class ChatClosed(Exception):
    """The chat is closed; nothing more can be sent into it."""


class TooManyOpenChats(Exception):
    """The customer already has as many open chats as allowed."""


class ChatNotifier:
    """Wakes this process's long-polls when one of their chats changes.

    Only chats somebody is waiting on are tracked, so memory stays bounded by the waiters.
    """

    def __init__(self):
        self._condition = threading.Condition()
        self._watched = {}  # chat id -> [waiters, version]

    def notify(self, chat_id):
        with self._condition:
            entry = self._watched.get(chat_id)
            if entry is not None:
                entry[1] += 1
                self._condition.notify_all()

    @contextlib.contextmanager
    def watching(self, chat_id):
        """Register before reading, so a change between the read and the wait is not missed."""
        with self._condition:
            entry = self._watched.setdefault(chat_id, [0, 0])
            entry[0] += 1
            seen = [entry[1]]

        def wait(timeout):
            with self._condition:
                self._condition.wait_for(lambda: entry[1] != seen[0], timeout)
                seen[0] = entry[1]

        try:
            yield wait
        finally:
            with self._condition:
                entry[0] -= 1
                if entry[0] == 0:
                    del self._watched[chat_id]


notifier = ChatNotifier()


def notify_after_commit(chat_id):
    database.after_commit(lambda: notifier.notify(chat_id))


# --- finding and changing chats ----------------------------------------------------------

def is_possible_chat_id(public_id):
    """Ids from a URL path are unvalidated: one no chat could have is answered 404 at once
    (PostgreSQL would refuse a NUL outright)."""
    return 0 < len(public_id) <= MAX_CHAT_ID_LENGTH and "\x00" not in public_id

FIND_CHAT = Statement(
    'SELECT "id", "public_id", "user_id", "status", "last_seq", "customer_read_seq", '
    '"agent_read_seq" FROM "chat" WHERE "public_id" = ?')
FIND_OWN_CHAT = Statement(FIND_CHAT.sql + ' AND "user_id" = ?')


def find_chat(public_id, user=None):
    """The chat with that id (the user's own, when a user is given)."""
    if not is_possible_chat_id(public_id):
        raise ChatNotFound()
    row = (FIND_OWN_CHAT(public_id, user.id) if user is not None
           else FIND_CHAT(public_id)).fetchone()
    if row is None:
        raise ChatNotFound()
    return ChatRow(*row)


COUNT_OPEN_CHATS = Statement('SELECT COUNT(*) FROM "chat" WHERE "user_id" = ? AND "status" = ?')
INSERT_CHAT = Statement(
    'INSERT INTO "chat" ("public_id", "user_id", "status", "name", "plan_id", '
    '"account_created_at", "last_seq", "customer_read_seq", "agent_read_seq", "created_at", '
    '"updated_at") VALUES (?, ?, ?, ?, ?, ?, 1, 0, 0, ?, ?) RETURNING "id"')
INSERT_MESSAGE = Statement(
    'INSERT INTO "message" ("public_id", "chat_id", "seq", "sender", "agent_id", "body", '
    '"image_url", "created_at") VALUES (?, ?, ?, ?, ?, ?, ?, ?)')


def insert_message(chat_id, seq, sender, body, image_url, agent_id, now):
    public_id = new_public_id("msg")
    INSERT_MESSAGE(public_id, chat_id, seq, sender, agent_id, body, image_url, now)
    notify_after_commit(chat_id)
    return NewMessage(public_id, seq)


def create_chat(user, name, plan_id, account_created_at, body, image_url=None, max_open=None):
    """Open a chat and store its first message, both or neither; at most `max_open` open chats
    per customer."""
    with write_transaction():
        if max_open is not None:
            lock_user(user)  # concurrent creates by one customer count one after the other
            if COUNT_OPEN_CHATS(user.id, CHAT_OPEN).fetchone()[0] >= max_open:
                raise TooManyOpenChats()
        now = utcnow()
        public_id = new_public_id("chat")
        chat_id = INSERT_CHAT(public_id, user.id, CHAT_OPEN, name, plan_id, account_created_at,
                              now, now).fetchone()[0]
        message = insert_message(chat_id, 1, SENDER_USER, body, image_url, None, now)
    return ChatRow(chat_id, public_id, user.id, CHAT_OPEN, last_seq=1), message


# The UPDATE that bumps `last_seq` is the lock: SQLite's IMMEDIATE transaction holds the write
# lock, PostgreSQL holds the chat row until commit, so concurrent senders into one chat take
# turns, each gets its own seq, and they commit in seq order (a reader never sees seq 6 before
# seq 5). The same statement checks the status (so nothing slips into a chat closed a moment
# before) and, for customers, the owner.
BUMP_CHAT = Statement(
    'UPDATE "chat" SET "last_seq" = "last_seq" + 1, "updated_at" = ? '
    'WHERE "id" = ? AND "status" = ? RETURNING "id", "last_seq"')
BUMP_OWN_CHAT = Statement(
    'UPDATE "chat" SET "last_seq" = "last_seq" + 1, "updated_at" = ? '
    'WHERE "public_id" = ? AND "user_id" = ? AND "status" = ? RETURNING "id", "last_seq"')


def add_message(chat, sender, body, image_url=None, agent=None):
    """Append a message to an open chat with the next gap-free `seq`."""
    with write_transaction():
        now = utcnow()
        row = BUMP_CHAT(now, chat.id, CHAT_OPEN).fetchone()
        if row is None:
            raise ChatClosed()
        return insert_message(row[0], row[1], sender, body, image_url,
                              agent.id if agent else None, now)


def send_as_customer(user, public_id, body, image_url=None):
    """`add_message` into the customer's own chat, found and bumped in one statement."""
    if not is_possible_chat_id(public_id):
        raise ChatNotFound()
    with write_transaction():
        now = utcnow()
        row = BUMP_OWN_CHAT(now, public_id, user.id, CHAT_OPEN).fetchone()
        if row is None:
            find_chat(public_id, user)  # raises ChatNotFound when it is not theirs
            raise ChatClosed()
        return insert_message(row[0], row[1], SENDER_USER, body, image_url, None, now)


def set_status(chat, status):
    """Close or reopen a chat; doing it twice changes nothing the second time."""
    with write_transaction():
        changed = (Chat.update(status=status, updated_at=utcnow())
                   .where((Chat.id == chat.id) & (Chat.status != status)).execute())
        if changed:
            notify_after_commit(chat.id)
    chat.status = status


def mark_read(chat, mark_field, seq):
    """Move a read mark forward to `seq` (never back). Returns the mark now stored."""
    with write_transaction():
        last_seq = Chat.select(Chat.last_seq).where(Chat.id == chat.id).scalar()
        if seq > last_seq:
            raise ValidationError({"seq": [f"Must be at most {last_seq}, the last message."]})
        Chat.update({mark_field: seq}).where((Chat.id == chat.id) & (mark_field < seq)).execute()
        return Chat.select(mark_field).where(Chat.id == chat.id).scalar()


def count_unread(chat, sender, mark_field):
    mark = Chat.select(mark_field).where(Chat.id == chat.id)
    return (Message.select().where((Message.chat == chat.id) & (Message.sender == sender)
                                   & (Message.seq > mark)).count())


# --- reading messages --------------------------------------------------------------------

MESSAGES_AFTER = Statement(
    'SELECT m."public_id", m."seq", m."sender", m."body", m."image_url", m."created_at", '
    'm."agent_id", a."name", a."display_name" FROM "message" AS m '
    'LEFT JOIN "agent" AS a ON a."id" = m."agent_id" '
    'WHERE m."chat_id" = ? AND m."seq" > ? ORDER BY m."seq" LIMIT ?')
CHAT_STATUS = Statement('SELECT "status" FROM "chat" WHERE "id" = ?')


def messages_after(chat, after, limit, reread_status=False):
    """(status, message rows with seq > after in order, has_more). The status is the one read
    with the chat unless `reread_status`, for a poll that has waited."""
    rows = MESSAGES_AFTER(chat.id, after, limit + 1).fetchall()
    status = CHAT_STATUS(chat.id).fetchone()[0] if reread_status else chat.status
    return status, rows[:limit], len(rows) > limit


def poll_messages(chat, after, limit, wait, waiter_slots):
    """`messages_after`, waiting up to `wait` seconds for a first new message (or for the chat
    to be closed or reopened).

    Waiting holds a waitress thread, so at most `waiter_slots` requests wait at once; beyond
    that the answer comes at once. A waiter gives its database connection back while idle.
    """
    result = messages_after(chat, after, limit)
    if result[1] or wait <= 0 or not waiter_slots.acquire(blocking=False):
        return result
    status_before = result[0]
    try:
        deadline = time.monotonic() + wait
        with notifier.watching(chat.id) as wait_for_change:
            while True:
                result = messages_after(chat, after, limit, reread_status=True)
                remaining = deadline - time.monotonic()
                if result[1] or result[0] != status_before or remaining <= 0:
                    return result
                database.close()
                with request_lane.paused():
                    wait_for_change(min(remaining, CROSS_PROCESS_POLL_SECONDS))
    finally:
        waiter_slots.release()


def as_datetime(value):
    """A timestamp column as read: text on SQLite, a datetime on PostgreSQL."""
    return datetime.datetime.fromisoformat(value) if isinstance(value, str) else value


# --- chat lists ---------------------------------------------------------------------------

def encode_cursor(row):
    raw = f"{as_datetime(row[7]).isoformat()}|{row[0]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor):
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, chat_id = raw.split("|")
        stamp, chat_id = datetime.datetime.fromisoformat(stamp), int(chat_id)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        stamp = chat_id = None
    # Cursors are made here, so anything else is forged: an id no row could have (and no
    # database integer could hold), or a time that is not our naive UTC.
    if chat_id is None or not 0 < chat_id < 2**63 or stamp.tzinfo is not None:
        raise ValidationError({"before": ["Not a valid cursor."]})
    return stamp, chat_id


LIST_COLUMNS = (
    'c."id", c."public_id", c."status", c."name", c."plan_id", c."account_created_at", '
    'c."created_at", c."updated_at", c."last_seq", c."customer_read_seq", c."agent_read_seq", '
    'u."email", u."name", m."seq", m."sender", substr(m."body", 1, ' + str(PREVIEW_LENGTH)
    + '), m."created_at"')
READ_MARKS = {"customer_read_seq", "agent_read_seq"}
_list_statements = {}


def chat_list_statement(read_mark, by_status, by_user, by_public_id, before):
    """The list query for one combination of filters, built once. Each chat comes with its
    newest message (found through (chat_id, seq)) and its unread count."""
    key = (read_mark, by_status, by_user, by_public_id, before)
    if key not in _list_statements:
        assert read_mark in READ_MARKS
        where = ["1 = 1"]
        where += ['c."status" = ?'] if by_status else []
        where += ['c."user_id" = ?'] if by_user else []
        where += ['c."public_id" = ?'] if by_public_id else []
        where += ['(c."updated_at" < ? OR (c."updated_at" = ? AND c."id" < ?))'] if before else []
        _list_statements[key] = Statement(
            f'SELECT {LIST_COLUMNS}, (SELECT COUNT(*) FROM "message" AS x '
            f'WHERE x."chat_id" = c."id" AND x."sender" = ? AND x."seq" > c."{read_mark}") '
            'FROM "chat" AS c JOIN "user" AS u ON u."id" = c."user_id" '
            'JOIN "message" AS m ON m."chat_id" = c."id" AND m."seq" = c."last_seq" '
            f'WHERE {" AND ".join(where)} '
            'ORDER BY c."updated_at" DESC, c."id" DESC LIMIT ?')
    return _list_statements[key]


def chat_list_call(unread_sender, read_mark, status, before, limit, user=None, public_id=None):
    """(statement, parameters) of a list query."""
    statement = chat_list_statement(read_mark, status != "all", user is not None,
                                    public_id is not None, bool(before))
    params = [unread_sender]
    params += [status] if status != "all" else []
    params += [user.id] if user is not None else []
    params += [public_id] if public_id is not None else []
    if before:
        stamp, chat_id = decode_cursor(before)
        params += [stamp, stamp, chat_id]
    return statement, params + [limit + 1]


def chat_list(unread_sender, read_mark, status, before, limit, user=None, public_id=None):
    """A page of chats, most recent activity first, as rows of `chat_list_statement`:
    (rows, next cursor or None)."""
    statement, params = chat_list_call(unread_sender, read_mark, status, before, limit, user,
                                       public_id)
    rows = statement(*params).fetchall()
    page = rows[:limit]
    return page, encode_cursor(page[-1]) if len(rows) > limit else None
