"""Rate limits (flask-limiter) and the limits on what a client controls.

- failed authentications per client IP, across every endpoint;
- customer sends (create and chat) per user;
- agent calls per agent.

The per-user and per-agent limits are decorators that each limited view lists right below its
auth decorator, since they need to know the caller. Behind a proxy the client IP is the one
waitress takes from X-Forwarded-For, and only when TRUSTED_PROXY names that proxy, so a spoofed
header changes nothing.
"""
import functools
import math
import time

from flask import current_app, g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from werkzeug.exceptions import RequestHeaderFieldsTooLarge

limiter = Limiter(
    key_func=get_remote_address,
    application_limits=[lambda: current_app.config["RATELIMIT_AUTH_FAILURES"]],
    application_limits_deduct_when=lambda response: response.status_code == 401,
)


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


customer_sends = when_enabled(limiter.shared_limit(
    lambda: current_app.config["RATELIMIT_CUSTOMER_SENDS"], scope="customer-sends",
    key_func=lambda: f"user:{g.user.id}"))

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


def setup_limits(app):
    limiter.init_app(app)
    app.before_request(refuse_large_headers)
