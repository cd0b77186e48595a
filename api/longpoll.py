"""Long-polls: a poll with `wait` holds its request until a message arrives, the chat is closed
or reopened (the event log: an event is added), or the wait runs out.

A waiting poll holds a server thread (server/serve.py gives the server one per waiting poll on
top of its request threads), so at most `LONGPOLL_MAX_WAITERS` wait at once, and one caller's
at most its poller's `max_waiting`. Beyond either the answer comes at once, with what there is and a
hint of when to poll again (`Page.retry_after`): never an error, never a stall. Polls a client
opened and dropped keep waiting on the server until their time is up, and one client's must not
take every slot.

While it waits, a poll costs nothing but its thread's memory: it does no work until a change of
its own chat wakes it (storage/changes.py), it gives its database connection back, and it steps
out of the request lane (server/lane.py, through the hook its `WaiterSlots` were given), so it
holds up nobody. Each time it wakes, and before it answers, it
asks again whether its caller may still read, so a customer removed (or an agent revoked)
meanwhile gets a 401, not what was written after.
"""
import collections
import contextlib
import math
import random
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import events
from auth import AuthenticationFailed
from chat import chats
from models import database
from storage.changes import EVENTS, changes

# A poll that could not wait is told to come back after a few seconds, at random so that the
# clients turned away together do not all come back together.
RETRY_AFTER_SECONDS = (2, 6)


shutting_down = threading.Event()  # set once, by server/serve.py on SIGTERM


def stop_waiting():
    """The server is stopping: waiting polls answer at once with what they have, and no new
    poll waits."""
    shutting_down.set()
    changes.wake_all()


class Cursor(NamedTuple):
    """What a poll asks for: the messages after `after`, at most `limit` of them and about
    `max_bytes` of text (see `chats.messages_after`)."""
    after: int
    limit: int
    max_bytes: int

    @classmethod
    def of(cls, fields, config):
        """The cursor of a poll's validated `fields`, bounded by MAX_POLL_PAGE_BYTES."""
        return cls(fields["after"], fields["limit"], config["MAX_POLL_PAGE_BYTES"])


class Poller(NamedTuple):
    """Who polls: `still_allowed()` says whether the caller may still read (asked again while
    the poll waits); the polls of one `owner` wait `max_waiting` at a time at most (no owner:
    only the process-wide cap); the polls of a capped `group` ("agents") together hold at most
    the slots `WaiterSlots` allows that group."""
    still_allowed: Callable[[], bool]
    owner: str | None = None
    max_waiting: int | None = None
    group: str | None = None


class Page(NamedTuple):
    """What a poll found: the chat's status, the messages after the cursor, whether more wait,
    and, for a poll that wanted to wait and found no free slot, after how many seconds to ask
    again."""
    status: str
    messages: list
    has_more: bool
    retry_after: int | None = None


class WaiterSlots:
    """At most `capacity` long-polls wait at once in this process, at most `max_waiting` of one
    owner's, and at most `group_caps[group]` of a group's: agents' polls are such a group, so
    the slots past their share stay free for customers whatever one agent's tabs hold."""

    def __init__(self, capacity, group_caps=None, step_out=contextlib.nullcontext):
        if capacity < 0:
            raise ValueError("LONGPOLL_MAX_WAITERS must be 0 or more")
        # What a poll does while it waits, as a context (the server's: step out of SQLite's
        # request lane, so that it holds up nobody).
        self.step_out = step_out
        self._capacity = capacity
        self._group_caps = dict(group_caps or {})
        self._lock = threading.Lock()
        self.taken = 0
        self._by_owner = collections.Counter()  # owner -> its polls waiting now
        self._by_group = collections.Counter()  # group -> its polls waiting now

    @property
    def capacity(self):
        return self._capacity

    def try_take(self, poller):
        with self._lock:
            if self.taken >= self._capacity:
                return False
            if poller.owner is not None and self._by_owner[poller.owner] >= poller.max_waiting:
                return False
            if poller.group is not None \
                    and self._by_group[poller.group] >= self._group_caps[poller.group]:
                return False
            if poller.owner is not None:
                self._by_owner[poller.owner] += 1
            if poller.group is not None:
                self._by_group[poller.group] += 1
            self.taken += 1
            return True

    def give_back(self, poller):
        with self._lock:
            self.taken -= 1
            if poller.owner is not None:
                self._by_owner[poller.owner] -= 1
                if not self._by_owner[poller.owner]:
                    del self._by_owner[poller.owner]  # memory stays bounded by the waiters
            if poller.group is not None:
                self._by_group[poller.group] -= 1


AGENTS = "agents"  # the group of every agent's polls


def agent_share(config):
    """How many slots agents' polls may hold together: LONGPOLL_AGENT_SHARE_PERCENT of
    LONGPOLL_MAX_WAITERS, rounded up (so a share above 0 lets agents wait at all)."""
    return math.ceil(config["LONGPOLL_MAX_WAITERS"] * config["LONGPOLL_AGENT_SHARE_PERCENT"]
                     / 100)


def waiter_slots(config, step_out=contextlib.nullcontext):
    """The process's slots for waiting polls, as the settings size them; a poll waits inside
    `step_out()`."""
    return WaiterSlots(config["LONGPOLL_MAX_WAITERS"], {AGENTS: agent_share(config)}, step_out)


def read_page(chat_id, cursor, status):
    messages, has_more = chats.messages_after(chat_id, cursor.after, cursor.limit,
                                              cursor.max_bytes)
    return Page(status, messages, has_more)


def poll(chat, cursor, wait, slots, poller):
    """The messages of `chat` after the cursor, waiting up to `wait` seconds for a first new
    one (or for the chat to be closed or reopened), when a waiting slot is free. Raises
    `AuthenticationFailed` when the poller was refused access while it waited."""

    def read():
        return read_page(chat.id, cursor, chats.current_status(chat.id))

    def is_news(page, waiter):
        return page.messages or page.status != chat.status or waiter.status_changed

    first = read_page(chat.id, cursor, chat.status)
    return wait_for_news(chat.id, first, read, is_news, wait, slots, poller)


def poll_events(after, limit, max_bytes, wait, slots, poller):
    """The event log's `EventPage` after `after` (None: after the newest event), waiting up
    to `wait` seconds for a first new event, when a waiting slot is free. Raises
    `events.CursorExpired` for a cursor older than the events kept."""
    start = events.newest_id() if after is None else after

    def read():
        return events.page_after(start, limit, max_bytes)

    return wait_for_news(EVENTS, read(), read, lambda page, waiter: page.events, wait,
                         slots, poller)


def wait_for_news(key, first, read, is_news, wait, slots, poller):
    """`first` (a page already read) when it holds news or the caller may not wait; else the
    first page `read()` finds with news (`is_news(page, waiter)`) once `key` changed, or the
    last one read when `wait` seconds ran out."""
    if is_news(first, NO_CHANGE) or wait <= 0 or shutting_down.is_set():
        return first
    if not slots.try_take(poller):
        return first._replace(retry_after=random.randint(*RETRY_AFTER_SECONDS))
    try:
        return wait_for_change(key, read, is_news, time.monotonic() + wait, poller,
                               slots.step_out)
    finally:
        slots.give_back(poller)


class NoChange:
    """The waiter of a page read before any wait: nothing has changed yet."""
    status_changed = False


NO_CHANGE = NoChange()


def wait_for_change(key, read, is_news, deadline, poller, step_out):
    waiter = changes.watch(key)
    try:
        while True:
            page = read()
            # Asked after the read: a page read while the caller was still allowed holds only
            # what was written before any revocation.
            if not poller.still_allowed():
                raise AuthenticationFailed()
            remaining = deadline - time.monotonic()
            if is_news(page, waiter) or remaining <= 0 or shutting_down.is_set():
                return page
            database.close()  # the connection goes back to the pool while this waits
            with step_out():
                changes.wait(waiter, remaining)
            if shutting_down.is_set():
                # Nothing new as of the last read, and no read more: thousands of polls woken
                # at once by the stop would queue for the database instead of answering.
                return page
    finally:
        changes.stop_watching(key, waiter)
