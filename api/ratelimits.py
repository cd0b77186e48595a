"""Rate limits (flask-limiter) and the limits on what a client controls.

- failed authentications per client IP: once an address has failed too often, its further
  *failed* attempts answer 429 instead of 401 until the window ends. Only failures are counted
  or refused: valid credentials still work (a 256-bit HMAC cannot be guessed; the limit stops
  load and probing, and must not shut out a customer behind the same NAT as a broken client),
  and nothing else is limited per address, `/healthz` and `/api/openapi.json` included;
- customer sends (create and chat) per user;
- customer polls and the other customer calls (messages, list, read, close) per user;
- agent calls per agent.

The per-user and per-agent limits are decorators that each limited view lists right below its
auth decorator, since they need to know the caller. Behind a proxy the client IP is the one
waitress takes from X-Forwarded-For, and only when TRUSTED_PROXY names that proxy, so a spoofed
header changes nothing.

A store that cannot be reached (RATELIMIT_STORAGE_URI=redis://... with Redis down) turns no
request into a 500: flask-limiter logs a warning and counts in this process's memory until the
store answers again (`storage_status` tells which). A store that stops answering (frozen, a
stuck host, a half-open connection) does the same after a short timeout
(`settings.storage_options`), and no request waits for a ping: `StoreWatch` asks the store in
a thread of its own.

This module is the one that reaches into flask-limiter's internals, checked against
flask-limiter 4.1.1 (with limits 5.8.0 and redis 7.4.1): it sets `Limiter._storage_dead` and
`Limiter._storage_options`, and shadows the store's `check`, which `Limiter.__filter_limits`
calls on the request path.
"""
import concurrent.futures
import functools
import importlib.metadata
import math
import threading
import time

from flask import current_app, g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits.storage import MemoryStorage
from werkzeug.exceptions import RequestHeaderFieldsTooLarge

import settings

# The releases whose internals this module was checked against (tests/api/test_limits.py compares
# them with what is installed): flask-limiter's `_storage_dead`, `_storage_options` and its
# `__filter_limits` asking `self._storage.check()` of a store it found down; redis-py's
# `from_url` making clients that do not retry a timeout.
VERIFIED_RATE_LIMITING = {"flask-limiter": "4.1", "limits": "5.8", "redis": "7.4"}


def installed_rate_limiting():
    """{package: major.minor} as installed, for the packages of VERIFIED_RATE_LIMITING."""
    return {name: ".".join(importlib.metadata.version(name).split(".")[:2])
            for name in VERIFIED_RATE_LIMITING}


limiter = Limiter(key_func=get_remote_address, in_memory_fallback_enabled=True)


def when_enabled(limit):
    """`limit` as a decorator that costs nothing while RATELIMIT_ENABLED is off."""

    def decorate(view):
        limited_view = limit(view)

        @functools.wraps(view)
        def choose(*args, **kwargs):
            if current_app.config["RATELIMIT_ENABLED"]:
                return limited_view(*args, **kwargs)
            return view(*args, **kwargs)

        return choose

    return decorate


auth_failures = when_enabled(limiter.shared_limit(
    lambda: current_app.config["RATELIMIT_AUTH_FAILURES"], scope="auth-failures",
    key_func=get_remote_address))


@auth_failures
def count_failed_authentication():
    """A failed authentication from this address: the limit above counts it, and once the
    address has failed too often it raises `RateLimitExceeded` (429) instead of returning."""


customer_sends = when_enabled(limiter.shared_limit(
    lambda: current_app.config["RATELIMIT_CUSTOMER_SENDS"], scope="customer-sends",
    key_func=lambda: f"user:{g.user.id}"))

customer_polls = when_enabled(limiter.shared_limit(
    lambda: current_app.config["RATELIMIT_CUSTOMER_POLLS"],
    scope="customer-polls", key_func=lambda: f"user:{g.user.id}"))

agent_calls = when_enabled(limiter.shared_limit(
    lambda: current_app.config["RATELIMIT_AGENT_CALLS"], scope="agent-calls",
    key_func=lambda: f"agent:{g.agent.id}"))


def refuse_large_headers():
    """Headers past MAX_HEADER_BYTES get a JSON 431 (waitress's own, larger cap is a backstop
    that answers in plain text)."""
    if header_bytes(request.environ) > current_app.config["MAX_HEADER_BYTES"]:
        raise RequestHeaderFieldsTooLarge()


def header_bytes(environ):
    """The size of the request's header lines, about as sent ("Name: value\\r\\n")."""
    size = 0
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            size += len(key) - 1 + len(value)  # "HTTP_" off, ": " and CRLF on
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            size += len(key) + 4 + len(value)
    return size


def seconds_until_reset():
    """After a 429: the seconds until the breached window resets (at least 1). The window
    comes from the store: one that fails now gives the limit's whole window instead."""
    breached = limiter.current_limit
    if breached is None:
        return 60
    try:
        wait = math.ceil(breached.reset_at - time.time())
    except Exception:  # a store that fails to answer, whatever the error
        wait = breached.limit.get_expiry()
    return max(wait, 1)


def storage_status():
    """Where the rate limits are counted now, for /healthz: "ok" (in RATELIMIT_STORAGE_URI),
    "memory fallback" (that store was found unreachable: this process counts on its own until
    it answers again) or "off" (RATELIMIT_ENABLED is false). It waits for the store only
    for the process's first ping only, and at most FIRST_ANSWER_WAIT (a short deadline, once):
    after that it tells what the watch last found."""
    if not current_app.config["RATELIMIT_ENABLED"]:
        return "off"
    if limiter.limiter.storage is not limiter.storage:
        return "memory fallback"
    # flask-limiter finds the store down only when a limited request touches it: the watch
    # tells before (nothing to ask for this process's own memory).
    watch = current_app.extensions.get("ratelimit_store_watch")
    if watch is None or watch.answered(wait=FIRST_ANSWER_WAIT):
        return "ok"
    return "memory fallback"


def storage_answers(check):
    try:
        return bool(check())
    except Exception:  # a store that fails to answer is down, whatever the error
        return False


PING_INTERVAL = 1.0  # seconds between the watch's pings: /healthz is this fresh
# How long /healthz waits for the process's first ping: a refused connection answers at once,
# a frozen store after the socket timeout (0.5 s unless the URL sets another).
FIRST_ANSWER_WAIT = 1.0


class StoreTooSlow(Exception):
    """A call to the rate-limit store did not finish within its deadline."""


# The store's calls that flask-limiter's strategies and resets make.
STORE_CALLS = ("incr", "get", "get_expiry", "clear", "reset", "acquire_entry",
               "get_moving_window", "acquire_sliding_window_entry", "get_sliding_window",
               "clear_sliding_window")
STORE_CALL_THREADS = 4


class DeadlinedStore:
    """Every call to the store finishes within `deadline` seconds, or raises `StoreTooSlow`
    (flask-limiter then counts in memory, as when the store refuses). redis-py's socket
    timeout bounds each read, not a call: a store that drips its answer a byte at a time, or
    never ends one, held a request (and on SQLite every request, in the lane) for minutes.
    The calls run on a few threads of their own; one stuck on a dripping socket stays stuck
    there, never in a request."""

    def __init__(self, storage, deadline):
        self.deadline = deadline
        self.pool = concurrent.futures.ThreadPoolExecutor(STORE_CALL_THREADS,
                                                         thread_name_prefix="ratelimit-store")
        for name in STORE_CALLS:
            if hasattr(storage, name):
                setattr(storage, name, self.bounded(getattr(storage, name)))

    def bounded(self, call):
        @functools.wraps(call)
        def within_deadline(*args, **kwargs):
            future = self.pool.submit(call, *args, **kwargs)
            try:
                return future.result(timeout=self.deadline)
            except concurrent.futures.TimeoutError:
                future.cancel()  # (queued behind stuck calls: never run)
                raise StoreTooSlow(f"no answer within {self.deadline:g} s") from None
        return within_deadline


def store_call_deadline(options):
    """A call may take a connection and a read: the two timeouts together (1 s by default,
    what the URL sets otherwise)."""
    return sum(options.get(name, settings.STORE_TIMEOUT_SECONDS)
               for name in settings.STORE_TIMEOUTS)


class StoreWatch:
    """Whether the rate-limit store answers a ping, as a thread of its own last found, so
    that no request waits for one.

    flask-limiter asks a store it found down `storage.check()` again, on a request, 1, 2, 4...
    32 s later (`Limiter.__filter_limits`): a PING, which a frozen Redis makes wait the whole
    socket timeout, in the request lane that every request waits for on SQLite.
    `setup_limits` puts `store_is_back` in its place: no I/O. The thread starts with the
    first request (no CLI command starts it) and ends once another app has the limiter."""

    def __init__(self, storage):
        self.storage = storage
        self.ping = storage.check  # the store's own, before `store_is_back` shadows it
        self.deadline = None  # set with a `DeadlinedStore`: a ping past it has failed
        self.pinging = None  # the thread of the last bounded ping
        self.answers = False  # whether the last ping was answered
        self.answered_ping_began = -math.inf  # when the last answered ping was sent
        self.asked_since = None  # when flask-limiter first asked since the store came back
        self.first_answer = threading.Event()
        self.lock = threading.Lock()
        self.thread = None

    def start(self):
        if self.thread is not None:  # every request calls this: no lock once started
            return
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self.keep_asking, daemon=True,
                                               name="ratelimit-store-watch")
                self.thread.start()

    def keep_asking(self):
        while limiter.storage is self.storage:
            began = time.monotonic()
            self.answers = storage_answers(self.bounded_ping)
            if self.answers:
                self.answered_ping_began = began
            self.first_answer.set()
            time.sleep(PING_INTERVAL)

    def bounded_ping(self):
        """The store's ping within the deadline; False past it. A ping still stuck from an
        earlier round counts as no answer (no second thread joins it)."""
        if self.deadline is None:
            return self.ping()
        if self.pinging is not None and self.pinging.is_alive():
            return False
        answer = concurrent.futures.Future()

        def ping():
            try:
                answer.set_result(self.ping())
            except Exception as error:  # a store that fails to answer is down
                answer.set_exception(error)

        self.pinging = threading.Thread(target=ping, daemon=True, name="ratelimit-store-ping")
        self.pinging.start()
        try:
            return answer.result(timeout=self.deadline)
        except concurrent.futures.TimeoutError:
            return False

    def answered(self, wait=0.0):
        """Whether the last ping was answered; waits up to `wait` seconds for the first."""
        self.start()
        self.first_answer.wait(wait)
        return self.answers

    def store_is_back(self):
        """flask-limiter's `check()` of a store it found down: true once a ping sent after its
        first question (so after the store failed a request) has been answered. A ping
        answered just before the store froze does not count."""
        self.start()
        with self.lock:
            now = time.monotonic()
            if self.asked_since is None:
                self.asked_since = now
            if self.answered_ping_began > self.asked_since:
                self.asked_since = None
                return True
            return False


def setup_limits(app):
    uri = app.config["RATELIMIT_STORAGE_URI"]
    app.config["RATELIMIT_STORAGE_OPTIONS"] = {**settings.storage_options(uri),
                                               **app.config.get("RATELIMIT_STORAGE_OPTIONS", {})}
    # The limiter is one per process (the decorators above are made at import), and tests make
    # many apps: each new one starts on its own store and options, the store presumed
    # reachable (flask-limiter adds each app's options to those it holds).
    limiter._storage_options = {}
    try:
        limiter.init_app(app)
    except Exception as error:
        # The store cannot even be made (settings.py checks what it can before): one line and
        # status 2, as for any bad setting, instead of a traceback.
        settings.refuse("RATELIMIT_STORAGE_URI", f"cannot be used: {settings.one_line(error, uri)}")
    limiter._storage_dead = False
    if app.config["RATELIMIT_ENABLED"] and not isinstance(limiter.storage, MemoryStorage):
        watch = StoreWatch(limiter.storage)
        if uri.startswith(("redis", "valkey")):
            watch.deadline = store_call_deadline(app.config["RATELIMIT_STORAGE_OPTIONS"])
            DeadlinedStore(limiter.storage, watch.deadline)
        limiter.storage.check = watch.store_is_back
        app.extensions["ratelimit_store_watch"] = watch
        app.before_request(watch.start)
    app.before_request(refuse_large_headers)
