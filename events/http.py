"""One webhook attempt over HTTP: the signed POST, and what its answer means.

No database here: events/webhooks.py decides what to send and records what came of it.
"""
import contextlib
import datetime
import email.utils
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
import urllib.parse
from typing import NamedTuple
from urllib.parse import urlsplit

import urllib3
import urllib3.connection
import urllib3.util

from models import iso_utc, utcnow

# urllib3 logs some failures with the whole URL, whose path or query is often the webhook's
# secret: its records stop at its own logger (which has only a NullHandler). The sender logs
# every failure itself, naming the endpoint by scheme, host and port.
logging.getLogger("urllib3").propagate = False

VERSION = "2"
USER_AGENT = f"SupportZen-Webhooks/{VERSION}"
TIMEOUT_SECONDS = 5
ANSWER_KEPT_CHARACTERS = 200
PING = "ping"  # `webhooks test` only: never in the log
CONNECTIONS_PER_ENDPOINT = 8


def signature(secret, timestamp, body, event_id, event_type):
    """The X-Livechat-Signature value, keyed with WEBHOOK_SECRET:
    `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">,v2=<hex HMAC-SHA256 of
    "<t>.<event id>.<event type>.<body>">`. v1 covers the body (which holds the event's id and
    type); v2 covers the X-Livechat-Event-Id and X-Livechat-Event-Type headers as sent too, so
    that a receiver trusting them can check them (a captured delivery replayed under another
    id fails it)."""
    def signed(message):
        return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()

    v1 = signed(f"{timestamp}.".encode() + body)
    v2 = signed(f"{timestamp}.{event_id}.{event_type}.".encode() + body)
    return f"t={timestamp},v1={v1},v2={v2}"


class Outcome(NamedTuple):
    """What one attempt came to: `delivered`, or worth trying again (`retry`, after
    `retry_after` seconds when the receiver said so), or neither (failed for good)."""
    delivered: bool
    retry: bool
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    answer: str = ""


RETRIED_STATUSES = {408, 429}


def judge(status, retry_after_header, answer):
    if 200 <= status < 300:
        return Outcome(True, False, status, answer=answer)
    if status in RETRIED_STATUSES or status >= 500:
        return Outcome(False, True, status, f"HTTP {status}", parse_retry_after(
            retry_after_header), answer)
    if 300 <= status < 400:
        return Outcome(False, False, status, f"HTTP {status}: redirects are not followed",
                       answer=answer)
    return Outcome(False, False, status, f"HTTP {status}", answer=answer)


def parse_retry_after(value):
    """Seconds from a Retry-After header (a number of seconds, or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)  # (a huge one is inf: the caller bounds it)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return max(0.0, (moment - datetime.datetime.now(datetime.UTC)).total_seconds())


TIMED_OUT = f"timed out after {TIMEOUT_SECONDS} s"


def describe_error(error):
    """One line about a failed connection, naming no URL (it may hold a secret)."""
    if isinstance(error, urllib3.exceptions.NewConnectionError):  # (a ConnectTimeoutError)
        # "<connection object>: Failed to establish a new connection: [Errno 111] Connection
        # refused": the reason is the last part.
        return f"connection failed: {str(error).rsplit(': ', 1)[-1]}"
    if isinstance(error, urllib3.exceptions.TimeoutError):
        return TIMED_OUT
    if isinstance(error, urllib3.exceptions.SSLError):
        return "TLS error"
    if isinstance(error, urllib3.exceptions.ProtocolError):
        return "connection broken before an answer"
    return type(error).__name__


def post(http, url, secret, event_id, event_type, body):
    """POST one event's body to `url`, signed now; its `Outcome`, within TIMEOUT_SECONDS."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               "X-Livechat-Event-Id": str(event_id), "X-Livechat-Event-Type": event_type,
               "X-Livechat-Signature": signature(secret, int(time.time()), body, event_id,
                                                 event_type)}
    credentials = urllib3.util.parse_url(url).auth  # user:password@ in the URL: Basic auth
    if credentials:
        headers["Authorization"] = urllib3.util.make_headers(
            basic_auth=urllib.parse.unquote(credentials))["authorization"]
    with deadlines.watch(TIMEOUT_SECONDS) as attempt:
        try:
            response = send(http, url, body, headers)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            return Outcome(False, True, error=TIMED_OUT if attempt.expired
                           else describe_error(error))
        try:
            answer = response.read(ANSWER_KEPT_CHARACTERS * 4).decode("utf-8", "replace")
        except (urllib3.exceptions.HTTPError, OSError):
            answer = ""  # the status came in time: it decides
        finally:
            response.close()  # the rest of a long answer is never read
    return judge(response.status, response.headers.get("Retry-After"),
                 answer[:ANSWER_KEPT_CHARACTERS])


# --- a deadline for the whole attempt ------------------------------------------------------
# urllib3's timeouts bound each socket operation, not the attempt: a receiver that sends a
# byte every few seconds would hold an attempt (and its delivery's claim) for as long as it
# likes. So a watchdog shuts down the socket of an attempt past its deadline, which ends the
# read or write blocked on it at once; and a connection made only after the deadline (a slow
# name lookup) sends nothing.

_current = threading.local()  # the attempt the thread is making


class Attempt:
    __slots__ = ("deadline", "connection", "expired")

    def __init__(self, deadline):
        self.deadline = deadline
        self.connection = None
        self.expired = False

    def expire(self):
        self.expired = True
        sock = getattr(self.connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):  # closed already
                sock.shutdown(socket.SHUT_RDWR)


class Deadlines:
    """The one watchdog thread, started with the first attempt; asleep when none is running."""

    def __init__(self):
        self._wake = threading.Condition()
        self._attempts = set()
        self._thread = None

    @contextlib.contextmanager
    def watch(self, seconds):
        attempt = Attempt(time.monotonic() + seconds)
        _current.attempt = attempt
        with self._wake:
            self._attempts.add(attempt)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="webhook-deadlines",
                                                daemon=True)
                self._thread.start()
            self._wake.notify()
        try:
            yield attempt
        finally:
            _current.attempt = None
            with self._wake:
                self._attempts.discard(attempt)

    def _run(self):
        with self._wake:
            while True:
                now = time.monotonic()
                for attempt in self._attempts:
                    if not attempt.expired and attempt.deadline <= now:
                        attempt.expire()
                waiting = [attempt.deadline for attempt in self._attempts if not attempt.expired]
                self._wake.wait(min(waiting) - now if waiting else None)


deadlines = Deadlines()


class DeadlineMixin:
    """A connection that its thread's attempt can cut (see `Deadlines`)."""

    def request(self, *args, **kwargs):
        attempt = getattr(_current, "attempt", None)
        if attempt is not None:
            attempt.connection = self
        return super().request(*args, **kwargs)

    def connect(self):
        super().connect()
        attempt = getattr(_current, "attempt", None)
        if attempt is not None and (attempt.expired or time.monotonic() >= attempt.deadline):
            self.close()
            raise urllib3.exceptions.ConnectTimeoutError(self, "connected after the deadline")


class DeadlineHTTPConnection(DeadlineMixin, urllib3.connection.HTTPConnection):
    pass


class DeadlineHTTPSConnection(DeadlineMixin, urllib3.connection.HTTPSConnection):
    pass


class DeadlineHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = DeadlineHTTPConnection


class DeadlineHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = DeadlineHTTPSConnection


def send(http, url, body, headers):
    """The POST; once more at once on a fresh connection when a kept-alive one turns out to
    have been closed by the receiver meanwhile (a race no check before reuse can close). A
    receiver may then get the event twice, as with any retry: it drops it by its id."""
    for last_try in (False, True):
        try:
            return http.request("POST", url, body=body, headers=headers, redirect=False,
                                retries=False, preload_content=False,
                                timeout=urllib3.Timeout(total=TIMEOUT_SECONDS))
        except urllib3.exceptions.ProtocolError:
            attempt = getattr(_current, "attempt", None)
            if last_try or (attempt is not None and attempt.expired):
                raise
    raise AssertionError("unreachable")


def new_http():
    """Connections kept alive per endpoint, whose attempts end at their deadline."""
    manager = urllib3.PoolManager(maxsize=CONNECTIONS_PER_ENDPOINT, retries=False)
    manager.pool_classes_by_scheme = {"http": DeadlineHTTPPool, "https": DeadlineHTTPSPool}
    return manager


def describe(url):
    """An endpoint as logs and `webhooks status` show it: scheme, host and port, and "..."
    for the rest (the path or query of a webhook URL is often its secret)."""
    parts = urlsplit(url)
    place = parts.netloc.rpartition("@")[2]  # never a user:password
    more = parts.path not in ("", "/") or parts.query
    return f"{parts.scheme}://{place}/{'...' if more else ''}"


def ping(url, secret, http=None):
    """Send a `ping` event to `url` now (not through the log: id 0, never retried); its
    `Outcome` and the milliseconds it took."""
    body = json.dumps({"id": 0, "type": PING, "created_at": iso_utc(utcnow()),
                       "data": {"message": "A test from `flask --app app webhooks test`."}},
                      separators=(",", ":")).encode()
    started = time.monotonic()
    outcome = post(http or new_http(), url, secret, 0, PING, body)
    return outcome, (time.monotonic() - started) * 1000
