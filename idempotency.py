"""Idempotency-Key: a retried create, send or reply gets the first answer, and nothing new is
stored.

The key row is inserted in the same transaction as the work it guards. A concurrent duplicate
waits on the key's unique index (PostgreSQL) or on the write lock (SQLite) until the first
commits, then finds the key and replays its answer, so exactly one message is ever stored. If
the first request fails, its key goes with its rollback and a retry starts afresh.
"""
import datetime
import hashlib
import json
import re
import threading
import time

from flask import current_app, request
from marshmallow import ValidationError

import models
from errors import read_data
from models import IdempotencyKey, utcnow, write_transaction

HEADER = "Idempotency-Key"
KEY_SHAPE = re.compile(r"\A[\x20-\x7e]{1,255}\Z")
PURGE_EVERY_SECONDS = 60


def request_key():
    """The request's Idempotency-Key, or None; a malformed one is a validation error."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not KEY_SHAPE.match(key):
        raise ValidationError({HEADER: ["Must be 1 to 255 printable ASCII characters."]})
    return key


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


def answer_once(scope, work):
    """`once` for the current request: (data, headers), the headers saying when it is a replay.
    """
    data, replayed = once(scope, read_data(), work,
                          current_app.config["IDEMPOTENCY_KEY_HOURS"])
    return data, {"Idempotent-Replayed": "true"} if replayed else {}


def once(scope, data, work, lifetime_hours):
    """`work()` (which returns the answer's `data`) once per caller and key: (data, replayed).

    `scope` names the caller ("user:7", "agent:2"); without an Idempotency-Key the work just
    runs.
    """
    key = request_key()
    if key is None:
        return work(), False
    purger.maybe_purge(datetime.timedelta(hours=lifetime_hours))
    request_print = fingerprint(data)
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
        raise models.IdempotencyKeyReused()
    return json.loads(first.response), True
