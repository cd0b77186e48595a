"""Who waits for which chat (or for the event log: the key `EVENTS`), and how a change reaches
exactly them, from this process or another.

`ChatChanges` keeps, for each chat somebody waits on, the waiters of that chat and nothing else:
a change wakes its own chat's waiters (a dictionary lookup), never every waiter in the process,
and a waiting poll costs its thread's memory and no work until then.

A change made by this process wakes its waiters right after its commit. A change made by
another process (a second instance, a CLI command) is noticed by one `ChangeWatcher` thread per
process, whose cost grows with the changes and not with the waiters:
- on PostgreSQL the writing transaction sends `NOTIFY` (delivered at its commit, and only if it
  commits) and the watcher `LISTEN`s on its own connection;
- on SQLite the watcher asks `PRAGMA data_version` ten times a second on its own connection (a
  few microseconds: it changes when any other connection committed) and only then reads which
  chats changed since it last looked.
"""
import collections
import logging
import os
import sqlite3
import threading
import time
import uuid
from typing import NamedTuple

from models import database, database_switch_hooks, is_sqlite, utcnow
from storage import queries
from storage.trouble import OnceAMinute

logger = logging.getLogger("supportzen.changes")

NOTIFY_CHANNEL = "supportzen_chat_changes"
STATUS_MARK = " status"  # ends the payload of a close or a reopen
# The waiters of the event log (the agent feed) wait under this key, beside the chats' ids;
# a notification of it carries this word where a chat's carries its id.
EVENTS = "events"
SQLITE_WATCH_SECONDS = 0.1
LISTEN_TIMEOUT_SECONDS = 0.25  # how soon the PostgreSQL watcher notices it should stop
LISTEN_CHECK_SECONDS = 30  # how often it makes sure its connection is alive
RECONNECT_SECONDS = (0.5, 1, 2, 5, 10)  # between attempts, the last one repeated
ANNOUNCED_KEPT_SECONDS = 10.0

# Tells this process's own notifications from the others' on a shared PostgreSQL.
INSTANCE = uuid.uuid4().hex[:12]


class Announced(NamedTuple):
    """A change this process committed and announced: the chat's `updated_at` as stored, and
    when (monotonic seconds) it was announced."""
    stamp: str
    at: float


class Waiter:
    """One waiting poll: a lock held until its chat changes (cheaper than an Event)."""
    __slots__ = ("_signal", "pending", "status_changed")

    def __init__(self):
        self._signal = threading.Lock()
        self._signal.acquire()
        self.pending = False  # a wake-up not yet taken (changed under the registry's lock)
        # The chat was closed or reopened meanwhile: the poll answers even when a close and a
        # reopen came one after the other, and the status it reads is the one it started with.
        self.status_changed = False


class ChatChanges:
    """The waiters of each chat; `notify(chat_id)` wakes those of one chat.

    Memory stays bounded by the waiters: a chat leaves the table with its last waiter.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._waiters = {}  # chat id -> {Waiter: None}, an ordered set
        # SQLite: the last change of each chat this process committed and announced itself,
        # (chat id -> `Announced`), so that the watcher does not announce it twice.
        self._announced = collections.OrderedDict()
        self.woken = 0  # waiting polls woken by a change, since the process started
        # SQLite: the newest event this process wrote (the watcher skips what it announced).
        self._own_event_id = 0
        # Called (with no argument) after each commit that added events, here or elsewhere:
        # the webhook sender's doorbell.
        self.event_listeners = []

    def waiting(self):
        with self._lock:
            return sum(map(len, self._waiters.values()))

    def notify(self, chat_id, status_changed=False):
        with self._lock:
            waiters = self._waiters.get(chat_id)
            if waiters:
                for waiter in waiters:
                    waiter.status_changed |= status_changed
                    self._wake(waiter)

    def wake_all(self):
        """Wake every waiter (the server is stopping, or notifications may have been lost)."""
        with self._lock:
            for waiters in self._waiters.values():
                for waiter in waiters:
                    self._wake(waiter)

    def _wake(self, waiter):
        if not waiter.pending:
            waiter.pending = True
            self.woken += 1
            waiter._signal.release()

    def announce_after_commit(self, chat_id, stamp, status_changed=False):
        """In a write transaction that changed the chat (its status, when `status_changed`)
        and stamped its `updated_at` with `stamp`: wake its waiters here once the transaction
        commits, and on PostgreSQL tell the other instances in the same commit."""
        if is_sqlite():
            # Noted before the commit: the watcher may see the commit before the callback runs.
            # (A transaction that rolls back leaves a stamp no row has: harmless.)
            self._note_announced(chat_id, stamp)
        else:
            queries.NOTIFY.execute(NOTIFY_CHANNEL, f"{INSTANCE} {chat_id}"
                                                   + (STATUS_MARK if status_changed else ""))
        database.after_commit(lambda: self.notify(chat_id, status_changed))

    def announce_event(self, event_id):
        """In a write transaction that added event `event_id`: wake the event log's waiters
        once it commits, here and (PostgreSQL) in the other instances."""
        if is_sqlite():
            with self._lock:
                self._own_event_id = max(self._own_event_id, event_id)
        else:  # identical notifications of one transaction are delivered once
            queries.NOTIFY.execute(NOTIFY_CHANNEL, f"{INSTANCE} {EVENTS}")
        database.after_commit(self.events_added)

    def events_added(self):
        self.notify(EVENTS)
        for listener in self.event_listeners:
            listener()

    def events_added_elsewhere(self, newest_id=None):
        """The watcher saw new events (up to `newest_id`, on SQLite)."""
        if newest_id is not None:
            with self._lock:
                if newest_id <= self._own_event_id:
                    return  # our own, already announced
        self.events_added()

    def _note_announced(self, chat_id, stamp):
        now = time.monotonic()
        with self._lock:
            self._announced[chat_id] = Announced(stored_stamp(stamp), now)
            self._announced.move_to_end(chat_id)
            while self._announced:
                oldest = next(iter(self._announced.values()))
                if now - oldest.at < ANNOUNCED_KEPT_SECONDS:
                    break
                self._announced.popitem(last=False)

    def changed_elsewhere(self, chat_id, stamp=None, status_changed=False):
        """The watcher saw this chat change (to `updated_at` = `stamp`, on SQLite)."""
        if stamp is not None:
            with self._lock:
                announced = self._announced.get(chat_id)
                if announced is not None and announced.stamp == stamp:
                    return  # our own commit, already announced
        self.notify(chat_id, status_changed)

    def watch(self, chat_id):
        """Register a waiter before reading, so a change between the read and the wait is not
        missed; pass it to `wait` and then to `stop_watching`."""
        watcher.ensure_running()
        waiter = Waiter()
        with self._lock:
            self._waiters.setdefault(chat_id, {})[waiter] = None
        return waiter

    def wait(self, waiter, timeout):
        """True at the next change of the chat (or one since the last wait), False after
        `timeout` seconds."""
        woken = waiter._signal.acquire(timeout=max(timeout, 0))
        if woken:
            with self._lock:
                waiter.pending = False
        return woken

    def stop_watching(self, chat_id, waiter):
        with self._lock:
            waiters = self._waiters.get(chat_id)
            if waiters is not None:
                waiters.pop(waiter, None)
                if not waiters:
                    del self._waiters[chat_id]


def stored_stamp(stamp):
    """A datetime as the SQLite driver stores it (and the watcher reads it back)."""
    return stamp.isoformat(" ")


changes = ChatChanges()


class ChangeWatcher:
    """The one thread per process that learns of other processes' changes.

    It starts with the first poll that waits (a process nobody waits on needs none), and starts
    watching in that poll's thread, before the poll reads: what the poll's read missed, the
    watcher sees. When it must connect again later, it wakes every waiter once connected, since
    it cannot know what changed meanwhile.
    """

    def __init__(self, registry):
        self.registry = registry
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watching = None  # the database its thread watches
        self.trouble = OnceAMinute()

    def ensure_running(self):
        if self._watching is database.obj:
            return
        with self._lock:
            db = database.obj
            if self._watching is db or db is None:
                return
            self._stop.set()  # a watcher of another database ends by itself
            self._stop = threading.Event()
            if is_sqlite() and db.database in ("", ":memory:"):
                self._watching = db  # no other process can see it
                return
            try:
                kind = SQLiteWatch(db.database) if is_sqlite() else PostgresWatch(db)
            except ImportError:  # psycopg2 alone serves requests, but cannot LISTEN here
                logger.warning("waiting polls learn of other instances' changes only with "
                               "psycopg 3: pip install -r requirements-postgres.txt")
                self._watching = db
                return
            try:
                kind.open()
            except kind.errors as error:
                self._complain(kind.name, error)  # the thread tries again
            # Only now may other polls go on without waiting for this lock: the watcher sees
            # every change from here on.
            self._watching = db
            threading.Thread(target=self._watch, name="change-watcher",
                             args=(kind, self._stop), daemon=True).start()

    def stop(self):
        """Stop watching (the thread ends within a fraction of a second, by itself)."""
        with self._lock:
            self._stop.set()
            self._watching = None

    def _watch(self, kind, stop):
        attempt = 0
        try:
            while not stop.is_set():
                try:
                    if not kind.is_open():
                        kind.open()
                        self.registry.wake_all()  # what changed while we did not look is read
                        if attempt:
                            logger.info("watching other processes' changes again")
                    attempt = 0
                    for chat_id, stamp, status_changed in kind.changes(stop):
                        if chat_id == EVENTS:
                            self.registry.events_added_elsewhere(stamp)
                        else:
                            self.registry.changed_elsewhere(chat_id, stamp, status_changed)
                except kind.errors as error:
                    self._complain(kind.name, error)
                    kind.close()
                    stop.wait(RECONNECT_SECONDS[min(attempt, len(RECONNECT_SECONDS) - 1)])
                    attempt += 1
        finally:
            kind.close()

    def _complain(self, what, error):
        self.trouble.once_a_minute(logger, logging.WARNING,
                                   f"watching other processes' changes: {what}: {error}")


class SQLiteWatch:
    """`PRAGMA data_version` on a connection of its own, ten times a second; when it moved,
    the chats whose `updated_at` passed the newest one seen so far."""
    name = "SQLite"
    errors = (sqlite3.Error,)

    def __init__(self, path):
        self.path = path
        self.connection = None
        self.version = self.since = self.newest_event = None

    def is_open(self):
        return self.connection is not None

    def open(self):
        self.connection = open_watch_connection(self.path)
        self.version = self._data_version()
        newest = queries.NEWEST_CHAT_CHANGE.value_on(self.connection) or ""
        self.since = min(newest, stored_stamp(utcnow()))
        self.newest_event = self._newest_event()

    def _newest_event(self):
        return queries.NEWEST_EVENT_ID.value_on(self.connection) or 0

    def _data_version(self):
        return self.connection.execute("PRAGMA data_version").fetchone()[0]

    def changes(self, stop):
        """(chat id, updated_at, False) of each chat changed since the last call, after a
        pause (whether its status changed is not known here: a poll compares the status),
        then (EVENTS, newest event id, False) if events were added."""
        if stop.wait(SQLITE_WATCH_SECONDS):
            return []
        version = self._data_version()
        if version == self.version:
            return []
        self.version = version
        rows = queries.CHATS_CHANGED_SINCE.all_on(self.connection, self.since)
        if rows:
            # Never past this machine's clock: a chat stamped in the future (a clock stepped
            # back, data copied from a fast one) would otherwise hide every change until then.
            # Such a chat is only announced again with each change, until its time comes.
            self.since = min(rows[-1].updated_at, stored_stamp(utcnow()))
        found = [(row.id, row.updated_at, False) for row in rows]
        newest_event = self._newest_event()
        if newest_event != self.newest_event:
            self.newest_event = newest_event
            found.append((EVENTS, newest_event, False))
        return found

    def close(self):
        if self.connection is not None:
            self.connection.close()
            self.connection = None


class PostgresWatch:
    """`LISTEN` on a connection of its own; each writing transaction's `NOTIFY` carries the
    chat's id and the instance that wrote it (this one's own are skipped: it woke its waiters
    already). A connection that died silently (a NAT forgetting it, a failover) would just
    never notify again: TCP keepalives and a query every `LISTEN_CHECK_SECONDS` find it out.
    (LISTEN needs a session of its own: through pgbouncer, only in session mode.)"""
    name = "PostgreSQL"

    def __init__(self, db):
        import psycopg

        self.errors = (psycopg.Error,)
        options = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30,
                   "keepalives_interval": 10, "keepalives_count": 3, **db.connect_params}
        self.connect = lambda: psycopg.connect(dbname=db.database, autocommit=True, **options)
        self.connection = None
        self.checked = 0.0

    def is_open(self):
        return self.connection is not None

    def open(self):
        self.connection = self.connect()
        self.connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
        self.checked = time.monotonic()

    def changes(self, stop):
        for notice in self.connection.notifies(timeout=LISTEN_TIMEOUT_SECONDS):
            instance, _, chat_id = notice.payload.partition(" ")
            status_changed = chat_id.endswith(STATUS_MARK)
            chat_id = chat_id.removesuffix(STATUS_MARK)
            if instance == INSTANCE:
                continue
            if chat_id.isdigit():
                yield int(chat_id), None, status_changed
            elif chat_id == EVENTS:
                yield EVENTS, None, False
        if time.monotonic() - self.checked > LISTEN_CHECK_SECONDS:
            self.connection.execute("SELECT 1")  # raises on a dead connection: reconnect
            self.checked = time.monotonic()

    def close(self):
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def open_watch_connection(path):
    """Read-only, and never creating the file (a test's database may be gone by now)."""
    uri = "file:" + os.path.abspath(path).replace("?", "%3f").replace("#", "%23") + "?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=10, check_same_thread=False)


watcher = ChangeWatcher(changes)
database_switch_hooks.append(watcher.stop)
