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
store answers again (`storage_status` tells which).
"""
import functools
import math
import time

from flask import current_app, g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits.storage import MemoryStorage
from werkzeug.exceptions import RequestHeaderFieldsTooLarge

import settings

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
    """After a 429: the seconds until the breached window resets (at least 1)."""
    breached = limiter.current_limit
    wait = math.ceil(breached.reset_at - time.time()) if breached else 60
    return max(wait, 1)


def storage_status():
    """Where the rate limits are counted now, for /healthz: "ok" (in RATELIMIT_STORAGE_URI),
    "memory fallback" (that store was found unreachable: this process counts on its own until
    it answers again) or "off" (RATELIMIT_ENABLED is false)."""
    if not current_app.config["RATELIMIT_ENABLED"]:
        return "off"
    if limiter.limiter.storage is not limiter.storage:
        return "memory fallback"
    # flask-limiter finds the store down only when a limited request touches it: ask it (a
    # ping for Redis; nothing to ask for this process's own memory).
    if isinstance(limiter.storage, MemoryStorage) or storage_answers(limiter.storage):
        return "ok"
    return "memory fallback"


def storage_answers(storage):
    try:
        return bool(storage.check())
    except Exception:  # a store that fails to answer is down, whatever the error
        return False


def setup_limits(app):
    try:
        limiter.init_app(app)
    except Exception as error:
        # The store cannot even be made (settings.py checks what it can before): one line and
        # status 2, as for any bad setting, instead of a traceback.
        uri = app.config["RATELIMIT_STORAGE_URI"]
        settings.refuse("RATELIMIT_STORAGE_URI", f"cannot be used: {settings.one_line(error, uri)}")
    # The limiter is one per process (the decorators above are made at import), and tests make
    # many apps: each new one starts on its own store, presumed reachable.
    limiter._storage_dead = False
    app.before_request(refuse_large_headers)
