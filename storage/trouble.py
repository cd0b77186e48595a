"""When the database fails: its real cause, logged once a minute, and remembered for
`/healthz` until a write succeeds again.

A full disk, a read-only file or a corrupt page fails every request that touches it; the log
should name that cause once, not fill up with it, and `/healthz` should say so while it lasts.
"""
import logging
import sqlite3
import threading
import time

import peewee

TROUBLE_SECONDS = 60.0


class OnceAMinute:
    """Log each distinct message at most once per `interval` seconds, then say how many were
    left out: a full disk fails every request, and its cause should stand out in the log, not
    fill it."""

    def __init__(self, interval=TROUBLE_SECONDS, clock=time.monotonic):
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._last = {}  # message: [when it was last logged, how many since]

    def once_a_minute(self, log, level, message):
        with self._lock:
            now = self.clock()
            last = self._last.get(message)
            if last is not None and now - last[0] < self.interval:
                last[1] += 1
                return
            if len(self._last) > 100:  # messages that vary must not grow this forever
                self._last = {key: value for key, value in self._last.items()
                              if now - value[0] < self.interval}
            left_out = last[1] if last else 0
            self._last[message] = [now, 0]
        if left_out:
            message = f"{message} (and {left_out} more times since it was last logged)"
        log.log(level, "%s", message)


# Failures that are bugs in a statement, not a database that cannot be used: never "unavailable".
STATEMENT_ERRORS = (peewee.IntegrityError, peewee.ProgrammingError, peewee.DataError,
                    peewee.NotSupportedError)


def root_cause(error):
    """The database error underneath `error`. After SQLite refuses a write (a full disk), it has
    rolled the transaction back itself, and the ROLLBACK that follows fails with "cannot
    rollback - no transaction is active": the error that surfaces hides the real one, which
    Python keeps as its context."""
    cause, link, seen = error, error, set()
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, peewee.DatabaseError) and not isinstance(link, STATEMENT_ERRORS):
            cause = link
        link = link.__cause__ or link.__context__
    return cause


def lost_connection(error):
    """The database cannot be reached (a server down, a file that cannot be opened), as
    opposed to one that answers but cannot store (read-only, full, corrupt)."""
    if isinstance(error, peewee.InterfaceError):
        return True
    driver_error = getattr(error, "orig", None)  # peewee keeps the driver's error there
    if isinstance(driver_error, sqlite3.Error):
        return getattr(driver_error, "sqlite_errorcode", None) == sqlite3.SQLITE_CANTOPEN
    if hasattr(driver_error, "sqlstate"):  # psycopg: no SQLSTATE when no server answered
        state = driver_error.sqlstate
        return state is None or state.startswith(("08", "57P"))
    return False


def describe_failure(error):
    """`error` in one line for the log: the database's root cause, or what the system said
    (a folder that cannot be made, say), or the exception's own message."""
    if isinstance(error, peewee.ImproperlyConfigured):  # peewee's word for a missing driver
        return "PostgreSQL needs its driver: pip install -r requirements-postgres.txt"
    if isinstance(error, (peewee.PeeweeException, sqlite3.Error)):
        return str(root_cause(error)) or type(error).__name__
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    return str(error) or type(error).__name__


class WritesFailing(peewee.OperationalError):
    """Requests failed on the database a moment ago and no write has succeeded since."""


class DatabaseTrouble:
    """The database's recent failures: logged once a minute per cause, and the latest kept for
    `database_health` until a write succeeds (or a minute passes without another failure)."""

    def __init__(self):
        self.log = OnceAMinute()
        self._failure = None  # (monotonic time, cause)

    def failed(self, error, log):
        """A request failed on the database: log why (once a minute), and remember it unless
        `database_health`'s own probe would see it (then the probe alone says when it is
        over)."""
        cause = root_cause(error)
        if not lost_connection(cause):
            self._failure = (self.log.clock(), str(cause))
        self.log.once_a_minute(log, logging.ERROR, f"database unavailable: {cause}")

    def wrote(self):
        self._failure = None

    def recent_failure(self):
        failure = self._failure
        if failure is not None and self.log.clock() - failure[0] < self.log.interval:
            return failure[1]
        return None

    def reset(self):
        self.log = OnceAMinute()
        self._failure = None


database_trouble = DatabaseTrouble()
