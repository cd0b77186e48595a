"""Webhooks: every event of the log POSTed to each WEBHOOK_URL, signed, and retried until it is
delivered or its retry time runs out.

A delivery is one event for one endpoint, a row of its own, so that it survives a restart and
several senders (server processes, `flask --app app webhooks run` workers) share the work:
- fan-out: each endpoint row records how far the log was copied into its deliveries; a sender
  copies new events while it holds that row, so each event gets one delivery per endpoint;
- heads: each chat's oldest pending delivery at an endpoint is marked as its head, set when
  it is queued or when the delivery before it finishes; only heads are claimed, so a chat's
  events arrive in id order and a backlog behind them costs a claim nothing;
- claim: a sender takes due heads for `WEBHOOK_CLAIM_SECONDS` (PostgreSQL: `FOR UPDATE SKIP
  LOCKED`; SQLite: its one writer at a time);
- send: outside any transaction, from a small pool of threads, so a slow receiver holds up
  neither the requests that made the events nor the other chats' deliveries;
- record: delivered, failed, or pending again with its next attempt. A sender killed before
  this leaves its claim to run out, and the event is sent again: at least once, and twice only
  when an attempt was cut off.
"""
import concurrent.futures
import datetime
import logging
import random
import secrets
import threading
import time
from typing import NamedTuple

from peewee import DatabaseError

import events
from events import http as webhook_http
from events.http import TIMEOUT_SECONDS, Outcome, describe, new_http, post
from models import (
    as_datetime,
    database,
    database_switch_hooks,
    utcnow,
    write_transaction,
)
from storage import deliveries as webhook_queries
from storage.changes import changes
from storage.trouble import OnceAMinute

logger = logging.getLogger("supportzen.webhooks")

MAX_BACKOFF_SECONDS = 3600  # retries come at least once an hour until they stop
# Attempts in flight at once per endpoint and sender: one slow receiver takes only its own.
PER_ENDPOINT = webhook_http.CONNECTIONS_PER_ENDPOINT
FAN_OUT_BATCH = 500
IDLE_SECONDS = 1.0  # how often a sender looks for work nobody rang it about
NO_ENDPOINT_IDLE_SECONDS = 60.0  # (with no endpoint, only for events to purge)
BATCH_SECONDS = 0.05
PURGE_EVERY_SECONDS = 600

PENDING = events.DELIVERY_PENDING
DELIVERED = "delivered"
FAILED = "failed"


# --- when to try again ---------------------------------------------------------------------

class RetryPolicy(NamedTuple):
    first_seconds: float  # the first retry's delay; each next one doubles it
    give_up_after: datetime.timedelta

    @classmethod
    def of(cls, config):
        return cls(config["WEBHOOK_FIRST_RETRY_SECONDS"],
                   datetime.timedelta(hours=config["WEBHOOK_RETRY_HOURS"]))

    def delay(self, attempts):
        """After `attempts` failed attempts: the exponential delay, capped at an hour, with
        half of it random, so that deliveries that failed together spread out."""
        ceiling = min(self.first_seconds * 2 ** min(attempts - 1, 40), MAX_BACKOFF_SECONDS)
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def next_state(outcome, attempts, queued_at, now, policy):
    """(state, next attempt time) after an attempt, `attempts` counting it."""
    if outcome.delivered:
        return DELIVERED, now
    if not outcome.retry:
        return FAILED, now
    deadline = queued_at + policy.give_up_after
    if now >= deadline:
        return FAILED, now
    wait = policy.delay(attempts)
    if outcome.retry_after is not None:
        # The receiver's word, but never sooner than a first retry: a Retry-After of 0 or of a
        # date gone by would have us hammer a receiver that asked for a pause.
        wait = max(outcome.retry_after, policy.first_seconds)
    left = (deadline - now).total_seconds()  # (and never past the deadline, however far)
    return PENDING, now + datetime.timedelta(seconds=min(wait, left))


# --- the sender ----------------------------------------------------------------------------

class Sender:
    """Delivers every configured endpoint's events from a thread of its own, with up to
    `PER_ENDPOINT` attempts in flight for each endpoint; also purges old events. One per server
    process or worker.
    """

    def __init__(self, config, deliver=True):
        self.urls = config["WEBHOOK_URL"]
        self.deliver = deliver  # False: only purge (another process sends)
        self.secret = config["WEBHOOK_SECRET"]
        self.policy = RetryPolicy.of(config)
        self.claim_for = datetime.timedelta(seconds=config["WEBHOOK_CLAIM_SECONDS"])
        self.retention = datetime.timedelta(days=config["EVENT_RETENTION_DAYS"])
        # Internal notes stay inside unless the operator sends them out on purpose.
        self.left_out = () if config["WEBHOOK_INCLUDE_NOTES"] else (events.NOTE_CREATED,)
        self.http = new_http()
        self.doorbell = threading.Event()
        self.stopping = threading.Event()
        self.endpoints = None  # {id: url}, registered by `start`
        self.in_flight = {}  # endpoint id -> its attempts in flight
        self._lock = threading.Lock()
        self._pool = None
        self._thread = None
        self.trouble = OnceAMinute()
        self._next_bug_report = 0.0
        # Rounds finished since `start` (each: purge when due, fan out, claim and start
        # sending): for tests and /healthz-like introspection, which wait on it instead of
        # sleeping. Written by the sender's thread only.
        self.rounds = 0

    def start(self):
        """Register the endpoints now (the events from here on are theirs), then send from a
        thread of its own."""
        self.endpoints = register(self.urls)
        database.close()
        self.in_flight = dict.fromkeys(self.endpoints, 0)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            PER_ENDPOINT * max(1, len(self.endpoints)), "webhook")
        if self.deliver and self.endpoints:  # (a purge alone needs no wake-up per event)
            changes.event_listeners.append(self.doorbell.set)
        self._thread = threading.Thread(target=self.run, name="webhook-sender", daemon=True)
        self._thread.start()

    def stop(self, timeout=TIMEOUT_SECONDS + 1):
        """Stop claiming; wait up to `timeout` for the attempts in flight to be recorded."""
        self.stopping.set()
        self.doorbell.set()
        if self.doorbell.set in changes.event_listeners:
            changes.event_listeners.remove(self.doorbell.set)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=False)  # (never more queued than it has threads)
            deadline = time.monotonic() + timeout
            while any(self.in_flight.values()) and time.monotonic() < deadline:
                time.sleep(0.05)

    def run(self):
        next_purge = 0.0
        while not self.stopping.is_set():
            started = time.monotonic()
            self.doorbell.clear()
            idle = IDLE_SECONDS if self.deliver and self.endpoints else NO_ENDPOINT_IDLE_SECONDS
            claimed = 0
            try:
                if time.monotonic() >= next_purge:
                    self.purge()
                    next_purge = time.monotonic() + PURGE_EVERY_SECONDS
                if self.deliver:
                    for endpoint_id in self.endpoints:
                        fan_out(endpoint_id, self.left_out)
                    claimed = self.claim_and_send()
                    idle = min(idle, self.until_next_attempt())
            except DatabaseError as error:
                self.trouble.once_a_minute(logger, logging.WARNING,
                                           f"webhook sender: database: {error}")
            except Exception:  # a bug must not end the thread: the next round tries again
                self.complain_of_bug("webhook sender round failed")
            finally:
                database.close()
            self.rounds += 1
            if not claimed:
                # Events that come in a burst are copied and claimed together: a round at
                # most every BATCH_SECONDS, whatever rings. (While attempts are under way,
                # each one that ends rings for the next round at once.)
                self.stopping.wait(max(0.0, started + BATCH_SECONDS - time.monotonic()))
            self.doorbell.wait(idle)

    def complain_of_bug(self, what):
        """Log the exception being handled, with its traceback, at most once a minute."""
        now = time.monotonic()
        if now >= self._next_bug_report:
            self._next_bug_report = now + 60
            logger.exception(what)

    def until_next_attempt(self):
        """Seconds until the soonest retry of any endpoint is due (a retry due in 50 ms is
        not left waiting for the next round)."""
        now = utcnow()
        soonest = [webhook_queries.NEXT_ATTEMPT.value(endpoint_id, PENDING, now)
                   for endpoint_id in self.endpoints]
        soonest = [as_datetime(moment) for moment in soonest if moment is not None]
        if not soonest:
            return IDLE_SECONDS
        return max(0.0, (min(soonest) - now).total_seconds())

    def purge(self):
        if self.deliver:
            for endpoint_id in self.endpoints:
                with write_transaction():
                    elect_missing_heads(endpoint_id)
        purged = events.purge(self.retention, self.endpoints or ())
        if purged:
            logger.info("purged %d events older than %s days", purged,
                        f"{self.retention.total_seconds() / 86400:g}")

    def claim_and_send(self):
        """Claim what each endpoint has room for and start sending it: how many."""
        claimed = 0
        for endpoint_id, url in self.endpoints.items():
            with self._lock:
                room = PER_ENDPOINT - self.in_flight[endpoint_id]
            if self.stopping.is_set():
                break
            if room <= 0:
                continue  # this endpoint is busy: the others are not held up by it
            for delivery in claim(endpoint_id, room, self.claim_for):
                with self._lock:
                    self.in_flight[endpoint_id] += 1
                self._pool.submit(self.attempt, endpoint_id, url, delivery)
                claimed += 1
        return claimed

    def attempt(self, endpoint_id, url, delivery):
        try:
            if delivery.body is None:  # purged before it could be sent (a sender was down)
                outcome = Outcome(False, False, error="the event was purged before delivery")
            else:
                outcome = post(self.http, url, self.secret, delivery.event_id, delivery.type,
                               delivery.body.encode("utf-8"))
            self.record(endpoint_id, url, delivery, outcome)
        except DatabaseError as error:  # the claim runs out, and the event is sent again
            self.trouble.once_a_minute(logger, logging.WARNING,
                                       f"webhook sender: cannot record an attempt: {error}")
        except Exception:  # a bug here must not kill the pool's thread
            self.complain_of_bug(f"webhook delivery of event {delivery.event_id} failed")
        finally:
            database.close()
            with self._lock:
                self.in_flight[endpoint_id] -= 1
            self.doorbell.set()

    def record(self, endpoint_id, url, delivery, outcome):
        now = utcnow()
        attempts = delivery.attempts + 1
        state, next_at = next_state(outcome, attempts, as_datetime(delivery.created_at), now,
                                    self.policy)
        error = outcome.error
        if state == FAILED and outcome.retry:
            error = f"gave up after {attempts} attempts: {error}"
        with write_transaction():
            webhook_queries.hold_endpoint(endpoint_id)
            recorded = webhook_queries.FINISH_ATTEMPT.execute(
                state, next_at, now, outcome.status, error, now if state == DELIVERED else None,
                delivery.id, delivery.claim).rowcount
            if recorded and state != PENDING and delivery.chat_id is not None:
                webhook_queries.PROMOTE_NEXT.execute(endpoint_id, PENDING, delivery.chat_id)
            if recorded and error is not None:
                webhook_queries.NOTE_ERROR.execute(f"event {delivery.event_id}: {error}",
                                                   now, endpoint_id)
        if state == FAILED:
            logger.warning("webhook %s: event %s failed: %s", describe(url), delivery.event_id,
                           error)
        elif state == PENDING:
            self.trouble.once_a_minute(logger, logging.INFO,
                                       f"webhook {describe(url)}: event {delivery.event_id}: "
                                       f"{error}; retrying")


def register(urls):
    """The endpoint rows of `urls`, made when new ({id: url}). A new endpoint receives the
    events from now on, not the log's past."""
    with write_transaction():
        for url in urls:
            webhook_queries.ADD_ENDPOINT.execute(url, utcnow())
        return {webhook_queries.FIND_ENDPOINT.one(url).id: url for url in urls}


def fan_out(endpoint_id, left_out=(events.NOTE_CREATED,)):
    """Copy the events the endpoint has no delivery for yet into its deliveries (unless
    another sender is doing it right now), but those of a type in `left_out`."""
    newest = events.newest_id()  # read first: every event up to it has committed
    if webhook_queries.ENDPOINT_PROGRESS.value(endpoint_id) >= newest:
        return  # (without the write lock, which this takes every second)
    while True:
        with write_transaction():
            done = webhook_queries.lock_endpoint(endpoint_id)
            if done is None or done >= newest:
                return
            through = min(newest, done + FAN_OUT_BATCH)
            queue(endpoint_id, [event for event in
                                webhook_queries.EVENTS_TO_FAN_OUT.all(done, through)
                                if event.type not in left_out])
            webhook_queries.SET_FANNED_OUT.execute(through, endpoint_id)


def queue(endpoint_id, new_events):
    """One delivery for each of `new_events` (in id order), the head of its chat when the chat
    has nothing pending at the endpoint yet."""
    now = utcnow()
    busy = set()  # chats with a pending delivery here, as found or as just queued
    for event in new_events:
        head = event.chat_id is None or (
            event.chat_id not in busy and webhook_queries.CHAT_HAS_PENDING.value(
                endpoint_id, PENDING, event.chat_id) is None)
        if event.chat_id is not None:
            busy.add(event.chat_id)
        webhook_queries.INSERT_DELIVERY.execute(endpoint_id, event.id, event.chat_id,
                                                PENDING, int(head), now, now)


def elect_missing_heads(endpoint_id):
    """Inside a write transaction: give each chat with pending deliveries and no head one (its
    oldest). After failed deliveries went back to pending; and at each purge, so that no chat
    could ever be left waiting for good."""
    webhook_queries.hold_endpoint(endpoint_id)
    return webhook_queries.ELECT_MISSING_HEADS.execute(endpoint_id, PENDING, endpoint_id,
                                                       PENDING).rowcount


def claim(endpoint_id, count, claim_for):
    """Take up to `count` of the endpoint's due deliveries for `claim_for`: `ClaimedDelivery`
    rows with the event's type and body. Each claim has an id of its own, which recording
    the attempt checks: an attempt whose claim ran out (and was taken again) records
    nothing."""
    now = utcnow()
    if webhook_queries.ANY_DUE_DELIVERY.value(endpoint_id, PENDING, now, now) is None:
        return []  # (without the write lock, which this takes every second)
    claim_id = secrets.token_hex(8)
    with write_transaction():
        now = utcnow()
        webhook_queries.claim_deliveries(claim_id, now + claim_for, endpoint_id, PENDING, now,
                                         count)
        claimed = webhook_queries.CLAIMED_DELIVERIES.all(endpoint_id, PENDING, claim_id)
    return sorted(claimed, key=lambda delivery: delivery.event_id)


# --- the server's sender -------------------------------------------------------------------

running = {"sender": None}


def start_sending(config):
    """In a server process, at start: register the WEBHOOK_URL endpoints (so that every event
    written from now on is delivered, by this process or by a worker), and start the sender,
    which purges old events and, unless WEBHOOK_SENDER is false, delivers."""
    stop_sending()
    sender = Sender(config, deliver=config["WEBHOOK_SENDER"])
    running["sender"] = sender
    sender.start()
    return sender


def stop_sending():
    sender, running["sender"] = running["sender"], None
    if sender is not None:
        sender.stop()


database_switch_hooks.append(stop_sending)
