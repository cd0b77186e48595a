"""Idempotency-Key: a retried create, send or reply gets the first answer, and nothing new is
stored.

`@idempotent(message, prepare)` wraps a view in two steps: `prepare` reads and checks the
request on every call (so a bad body or an unknown chat answers as it would without a key), and
the view does the work and returns the answer's `data`, once per key. The key row is inserted
in the same transaction as that work. A concurrent duplicate waits on the key's
unique index (PostgreSQL) or on the write lock (SQLite) until the first commits, then finds the
key and replays its answer, so exactly one message is ever stored. If the first request fails,
its key goes with its rollback and a retry starts afresh.
"""
import datetime
import functools
import hashlib
import json
import re
import threading
import time

from flask import current_app, g, request

from api.envelope import invalid_fields, read_data, success
from models import IdempotencyKey, utcnow, write_transaction

HEADER = "Idempotency-Key"
KEY_SHAPE = re.compile(r"\A[\x20-\x7e]{1,255}\Z")
PURGE_EVERY_SECONDS = 60


class IdempotencyKeyReused(Exception):
    """An Idempotency-Key came back with a different request."""


def request_key():
    """The request's Idempotency-Key, or None; a malformed one is a validation error."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not KEY_SHAPE.match(key):
        raise invalid_fields({HEADER: ["Must be 1 to 255 printable ASCII characters."]})
    return key


def caller_scope():
    """Who the key belongs to: keys of different callers never meet."""
    return f"user:{g.user.id}" if "user" in g else f"agent:{g.agent.id}"


def fingerprint(data):
    """What makes two requests 'the same': method, path and body."""
    canonical = json.dumps([request.method, request.path, data], sort_keys=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


class Purger:
    """Deletes keys older than their lifetime, at most once a minute per process."""

    def __init__(self):
        self._lock = threading.Lock()
        self._next = 0.0

    def maybe_purge(self, lifetime):
        with self._lock:
            if time.monotonic() < self._next:
                return
            self._next = time.monotonic() + PURGE_EVERY_SECONDS
        with write_transaction():
            IdempotencyKey.delete().where(IdempotencyKey.created_at < utcnow() - lifetime).execute()


purger = Purger()


def idempotent(message, prepare):
    """A view whose work runs once per caller and key.

    `prepare(**url_arguments)` validates the request and returns the keyword arguments of the
    work; the work returns the answer's `data`, which goes out in the envelope with `message`.
    A retry with the same key gets the first answer, marked `Idempotent-Replayed: true`.
    """

    def decorate(work):
        @functools.wraps(work)
        def view(**url_arguments):
            arguments = prepare(**url_arguments)
            key = request_key()
            if key is None:
                return success(message, work(**arguments))
            data, replayed = once(caller_scope(), key, lambda: work(**arguments))
            return success(message, data,
                           headers={"Idempotent-Replayed": "true"} if replayed else None)

        return view

    return decorate


def once(scope, key, work):
    """`work()` (which returns the answer's `data`) once per scope and key: (data, replayed)."""
    purger.maybe_purge(datetime.timedelta(hours=current_app.config["IDEMPOTENCY_KEY_HOURS"]))
    request_print = fingerprint(read_data())
    with write_transaction():
        inserted = (IdempotencyKey.insert(scope=scope, key=key, fingerprint=request_print,
                                          created_at=utcnow())
                    .on_conflict_ignore().execute())
        if inserted is not None:
            answer = work()
            (IdempotencyKey.update(response=json.dumps(answer))
             .where(IdempotencyKey.id == inserted).execute())
            return answer, False
        first = IdempotencyKey.get((IdempotencyKey.scope == scope) & (IdempotencyKey.key == key))
    if first.fingerprint != request_print:
        raise IdempotencyKeyReused()
    return json.loads(first.response), True
