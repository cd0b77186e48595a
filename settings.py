"""Every setting: its default and how it is read from the environment.

`load` takes the defaults, then the environment, then the `config` given to `create_app`
(tests override anything that way).
"""
import os
import sys

DEFAULTS = {
    "DATABASE_URL": None,  # None: a SQLite file in the instance folder
    "SQLITE_SYNCHRONOUS": "NORMAL",
    "DB_POOL_SIZE": 32,
    "MAX_CONTENT_LENGTH": 64 * 1024,
    "CORS_ORIGINS": "",
    "ADMIN_TOKEN": None,
    "LONGPOLL_MAX_WAITERS": 8,
    "IDEMPOTENCY_KEY_HOURS": 24,
    "MAX_OPEN_CHATS": 20,
    "MAX_HEADER_BYTES": 8 * 1024,
    "RATELIMIT_ENABLED": True,
    "RATELIMIT_STORAGE_URI": "memory://",
    "RATELIMIT_AUTH_FAILURES": "20 per minute",
    "RATELIMIT_CUSTOMER_SENDS": "60 per minute",
    "RATELIMIT_AGENT_CALLS": "600 per minute",
}

# Settings read from the environment, with the type each one is converted to.
ENVIRONMENT = {
    "DATABASE_URL": str,
    "SQLITE_SYNCHRONOUS": str,
    "DB_POOL_SIZE": int,
    "MAX_CONTENT_LENGTH": int,
    "CORS_ORIGINS": str,
    "ADMIN_TOKEN": str,
    "LONGPOLL_MAX_WAITERS": int,
    "IDEMPOTENCY_KEY_HOURS": float,
    "MAX_OPEN_CHATS": int,
    "MAX_HEADER_BYTES": int,
    "RATELIMIT_ENABLED": lambda value: value.strip().lower() in ("1", "true", "yes", "on"),
    "RATELIMIT_STORAGE_URI": str,
    "RATELIMIT_AUTH_FAILURES": str,
    "RATELIMIT_CUSTOMER_SENDS": str,
    "RATELIMIT_AGENT_CALLS": str,
}


def load(config=None):
    """The settings in force: defaults, then the environment, then `config`."""
    values = dict(DEFAULTS)
    for name, convert in ENVIRONMENT.items():
        text = os.environ.get(name)
        if text not in (None, ""):
            values[name] = convert(text)
    values.update(config or {})
    return values


def refuse(name, problem):
    """Stop at start on a bad setting: one line naming it and what is wrong, exit status 2, no
    traceback (`python app.py`, `waitress-serve`, `flask run` and every CLI command alike)."""
    print(f"error: setting {name}: {problem}", file=sys.stderr)
    raise SystemExit(2)
