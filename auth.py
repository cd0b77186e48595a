"""Authentication decorators.

Customers sign each request with hex HMAC-SHA256(key = their uuid, message = their email).
Every failure, whatever its cause, raises the same 401 and costs about the same time, so
nobody can learn which emails exist. Each failure counts against the client's address; once it
has failed too often, its failures answer 429 instead (valid credentials still pass).
"""
import functools
import hashlib
import hmac
import re
import secrets

from flask import current_app, g, request
from werkzeug.exceptions import NotFound

import models
from api import ratelimits
from api.envelope import read_data
from chat import accounts

HEX_TOKEN = re.compile(r"\A[0-9a-fA-F]{64}\Z")
# Signs for emails that match no user, so an unknown email costs what a known one does.
DUMMY_KEY = secrets.token_hex(18)


class AuthenticationFailed(Exception):
    """Any failed sign-in: the answer never says which part was wrong."""


def failure():
    """The exception for a failed sign-in, once it is counted against the client's address
    (which raises `RateLimitExceeded` instead when that address has failed too often)."""
    ratelimits.count_failed_authentication()
    return AuthenticationFailed()


def bearer_token():
    """The token of `Authorization: Bearer <token>`, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def utf8(value):
    """`value` as UTF-8 bytes, or None when it is not a string that can be encoded."""
    if not isinstance(value, str):
        return None
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        return None


def sign(key, message):
    return hmac.digest(key, message, "sha256").hex().encode("ascii")


def authenticate_user(data):
    """The active user whose uuid signed `data.email`; raises `AuthenticationFailed`
    otherwise."""
    token = bearer_token()
    email = data.get("email")
    email_bytes = utf8(email)
    user = accounts.find_active_user(email) if accounts.is_possible_email(email) else None
    key = user.uuid.encode("utf-8") if user else DUMMY_KEY.encode("ascii")
    expected = sign(key, email_bytes or b"")
    given = token.lower().encode("ascii") if token and HEX_TOKEN.match(token) else b"-" * 64
    if hmac.compare_digest(expected, given) and user is not None:
        return user
    raise failure()


def require_user(view):
    """Parse the body (its own 400/415), then authenticate the customer into `g.user`."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        g.user = authenticate_user(read_data())
        return view(*args, **kwargs)

    return wrapper


def caller_still_allowed():
    """Whether this request's caller may still use the API, for a long-poll to ask again while
    it waits (one indexed lookup): the customer still has the uuid that signed the request (not
    removed, nor given a new one), or the agent's token still works."""
    if "agent" in g:
        current = accounts.find_agent_by_digest(g.agent.token_digest)
        return current is not None and current.id == g.agent.id
    current = accounts.find_active_user(g.user.email)
    return current is not None and (current.id, current.uuid) == (g.user.id, g.user.uuid)


def digest(secret):
    """SHA-256 of a secret token, as compared."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


AGENT_TOKEN = re.compile(r"\A" + models.AGENT_TOKEN_PREFIX + r"[A-Za-z0-9_-]{43}\Z")


def authenticate_agent():
    """The active agent whose token this is; raises `AuthenticationFailed` otherwise.

    Only the token's SHA-256 is stored, so the lookup is by digest; a customer's HMAC (64 hex
    digits) never has the shape of an agent token.
    """
    token = bearer_token() or ""
    token_digest = accounts.digest_token(token)
    agent = accounts.find_agent_by_digest(token_digest) if AGENT_TOKEN.match(token) else None
    stored = agent.token_digest if agent else "-" * 64
    if hmac.compare_digest(stored.encode("ascii"), token_digest.encode("ascii")) and agent:
        return agent
    raise failure()


def require_agent(view):
    """Authenticate a support agent into `g.agent`."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        g.agent = authenticate_agent()
        return view(*args, **kwargs)

    return wrapper


def require_admin(view):
    """`Authorization: Bearer <ADMIN_TOKEN>`; the admin API does not exist without one."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        admin_token = current_app.config.get("ADMIN_TOKEN")
        if not admin_token:
            raise NotFound()
        token = bearer_token() or ""
        if not hmac.compare_digest(digest(token), digest(admin_token)):
            raise failure()
        return view(*args, **kwargs)

    return wrapper
