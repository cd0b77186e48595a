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
import datetime
import threading
import time

from flask import current_app
from marshmallow import ValidationError
from peewee import JOIN, Tuple, fn

from models import (CHAT_OPEN, SENDER_USER, Agent, Chat, Message, User, database, lock_user,
                    new_public_id, utcnow, write_transaction)

MAX_CHAT_ID_LENGTH = 64
CROSS_PROCESS_POLL_SECONDS = 0.5  # a long-poll re-reads this often for writes by other processes
PREVIEW_LENGTH = 200


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

def find_chat(public_id, user=None):
    """The chat with that id (the user's own, when a user is given)."""
    if not is_possible_chat_id(public_id):
        raise ChatNotFound()
    query = Chat.select(Chat, User).join(User).where(Chat.public_id == public_id)
    if user is not None:
        query = query.where(Chat.user == user)
    chat = query.first()
    if chat is None:
        raise ChatNotFound()
    return chat


def create_chat(user, name, plan_id, account_created_at, body, image_url=None, max_open=None):
    """Open a chat and store its first message, both or neither; at most `max_open` open chats
    per customer."""
    with write_transaction():
        if max_open is not None:
            lock_user(user)  # concurrent creates by one customer count one after the other
            open_chats = Chat.select().where((Chat.user == user) & (Chat.status == CHAT_OPEN))
            if open_chats.count() >= max_open:
                raise TooManyOpenChats()
        now = utcnow()
        chat = Chat.create(public_id=new_public_id("chat"), user=user, name=name,
                           plan_id=plan_id, account_created_at=account_created_at,
                           last_seq=1, created_at=now, updated_at=now)
        message = Message.create(public_id=new_public_id("msg"), chat=chat, seq=1,
                                 sender=SENDER_USER, body=body, image_url=image_url,
                                 created_at=now)
    return chat, message


def add_message(chat, sender, body, image_url=None, agent=None):
    """Append a message to an open chat with the next gap-free `seq`.

    The UPDATE that bumps `last_seq` is the lock: SQLite's IMMEDIATE transaction holds the
    write lock, PostgreSQL holds the chat row until commit, so concurrent senders into one
    chat take turns, each gets its own seq, and they commit in seq order (a reader never sees
    seq 6 before seq 5). The same statement checks the status, so a message can never slip
    into a chat closed a moment before.
    """
    with write_transaction():
        now = utcnow()
        rows = list(Chat.update(last_seq=Chat.last_seq + 1, updated_at=now)
                    .where((Chat.id == chat.id) & (Chat.status == CHAT_OPEN))
                    .returning(Chat.last_seq)
                    .tuples()
                    .execute())
        if not rows:
            raise ChatClosed()
        message = Message.create(public_id=new_public_id("msg"), chat=chat.id, seq=rows[0][0],
                                 sender=sender, agent=agent, body=body, image_url=image_url,
                                 created_at=now)
        notify_after_commit(chat.id)
    return message


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

def messages_after(chat, after, limit):
    """(status, messages with seq > after in order, has_more)."""
    rows = list(Message.select(Message, Agent).join(Agent, JOIN.LEFT_OUTER)
                .where((Message.chat == chat.id) & (Message.seq > after))
                .order_by(Message.seq).limit(limit + 1))
    status = Chat.select(Chat.status).where(Chat.id == chat.id).scalar()
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
                result = messages_after(chat, after, limit)
                remaining = deadline - time.monotonic()
                if result[1] or result[0] != status_before or remaining <= 0:
                    return result
                database.close()
                wait_for_change(min(remaining, CROSS_PROCESS_POLL_SECONDS))
    finally:
        waiter_slots.release()


# --- chat lists ---------------------------------------------------------------------------

def encode_cursor(chat):
    raw = f"{chat.updated_at.isoformat()}|{chat.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor):
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, chat_id = raw.split("|")
        return datetime.datetime.fromisoformat(stamp), int(chat_id)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise ValidationError({"before": ["Not a valid cursor."]}) from None


def chat_list(unread_sender, read_mark, status, before, limit, user=None, public_id=None):
    """A page of chats, most recent activity first: (chats, next cursor or None).

    Each chat carries `last_message` and `unread` (messages from `unread_sender` after
    `read_mark`), fetched in the same query.
    """
    last = Message.alias()
    counted = Message.alias()
    unread = (counted.select(fn.COUNT(counted.id))
              .where((counted.chat == Chat.id) & (counted.sender == unread_sender)
                     & (counted.seq > read_mark)))
    query = (Chat.select(Chat, User, last, unread.alias("unread"))
             .join(User)
             .switch(Chat)
             .join(last, on=((last.chat == Chat.id) & (last.seq == Chat.last_seq)),
                   attr="last_message"))
    if user is not None:
        query = query.where(Chat.user == user)
    if public_id is not None:
        query = query.where(Chat.public_id == public_id)
    if status != "all":
        query = query.where(Chat.status == status)
    if before:
        stamp, chat_id = decode_cursor(before)
        query = query.where(Tuple(Chat.updated_at, Chat.id) < Tuple(stamp, chat_id))
    rows = list(query.order_by(Chat.updated_at.desc(), Chat.id.desc()).limit(limit + 1))
    page = rows[:limit]
    return page, encode_cursor(page[-1]) if len(rows) > limit else None


# --- JSON shapes --------------------------------------------------------------------------

def whole_if_integral(number):
    """1679223400.0 back as 1679223400, the way the client sent it."""
    return int(number) if float(number).is_integer() else number


def iso(moment):
    return moment.isoformat(timespec="milliseconds") + "Z"


def message_json(message, for_agent):
    """A message as the customer or an agent sees it: customers see no more of an agent than
    a display name."""
    author = message.agent if message.agent_id else None
    item = {"messageId": message.public_id, "seq": message.seq, "sender": message.sender,
            "message": message.body, "image_url": message.image_url,
            "created_at": iso(message.created_at)}
    if for_agent:
        item["agent"] = ({"name": author.name, "display_name": author.display_name}
                         if author else None)
    else:
        item["agent_name"] = author.display_name if author else None
    return item


def last_message_json(message):
    return {"seq": message.seq, "sender": message.sender,
            "preview": message.body[:PREVIEW_LENGTH], "created_at": iso(message.created_at)}


def customer_chat_json(chat):
    return {"chatId": chat.public_id, "status": chat.status, "created_at": iso(chat.created_at),
            "updated_at": iso(chat.updated_at),
            "last_message": last_message_json(chat.last_message), "unread": chat.unread}


def agent_chat_json(chat):
    return {"chatId": chat.public_id, "status": chat.status,
            "customer": {"email": chat.user.email, "name": chat.user.name},
            "name": chat.name, "plan_id": chat.plan_id,
            "account_created_at": whole_if_integral(chat.account_created_at),
            "created_at": iso(chat.created_at), "updated_at": iso(chat.updated_at),
            "last_message": last_message_json(chat.last_message), "unread": chat.unread}


def poll_page(chat, fields, for_agent):
    """The answer to a poll with `after`, `limit` and `wait`, as the customer or an agent."""
    after = fields["after"]
    status, messages, has_more = poll_messages(chat, after, fields["limit"], fields["wait"],
                                               current_app.extensions["longpoll_slots"])
    return {"chatId": chat.public_id, "status": status,
            "messages": [message_json(message, for_agent) for message in messages],
            "next_after": messages[-1].seq if messages else after, "has_more": has_more}


