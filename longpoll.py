"""Long-polls: a poll with `wait` holds its request until a message arrives, the chat is closed
or reopened, or the wait runs out.

A waiting poll holds a server thread, so at most `LONGPOLL_MAX_WAITERS` wait at once (beyond
that the answer comes at once). While it waits, a poll gives its database connection back and
steps out of the request lane (lane.py), so it holds up nobody.
"""
import threading
import time
from typing import NamedTuple

import chats
from lane import request_lane
from models import database

CROSS_PROCESS_POLL_SECONDS = 0.5  # a waiting poll re-reads this often for other processes


class Page(NamedTuple):
    """What a poll found: the chat's status, the messages after the cursor, whether more wait."""
    status: str
    messages: list
    has_more: bool


class WaiterSlots:
    """At most `capacity` long-polls wait at once in this process."""

    def __init__(self, capacity):
        if capacity < 0:
            raise ValueError("LONGPOLL_MAX_WAITERS must be 0 or more")
        self._slots = threading.BoundedSemaphore(capacity) if capacity > 0 else None

    def try_take(self):
        return self._slots is not None and self._slots.acquire(blocking=False)

    def give_back(self):
        self._slots.release()


def read_page(chat_id, after, limit, status):
    messages, has_more = chats.messages_after(chat_id, after, limit)
    return Page(status, messages, has_more)


def poll(chat, after, limit, wait, slots):
    """The messages of `chat` after `after`, waiting up to `wait` seconds for a first new one
    (or for the chat to be closed or reopened), when a waiting slot is free."""
    page = read_page(chat.id, after, limit, chat.status)
    if page.messages or wait <= 0 or not slots.try_take():
        return page
    try:
        return wait_for_change(chat, after, limit, time.monotonic() + wait)
    finally:
        slots.give_back()


def wait_for_change(chat, after, limit, deadline):
    with chats.changes.watching(chat.id) as wait_for_notice:
        while True:
            page = read_page(chat.id, after, limit, chats.current_status(chat.id))
            remaining = deadline - time.monotonic()
            if page.messages or page.status != chat.status or remaining <= 0:
                return page
            database.close()  # the connection goes back to the pool while this waits
            with request_lane.paused():
                wait_for_notice(min(remaining, CROSS_PROCESS_POLL_SECONDS))
