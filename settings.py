"""Every setting: its default, its rule, and how it is read.

`load` takes the defaults, then the environment, then the `config` given to `create_app`
(tests override anything that way), and checks every value before anything uses it: a value
that would only fail on the first request (a rate limit that cannot be parsed answered 500 to
every request, /healthz included) stops the service at start instead.

A bad value in the environment is the operator's to fix: `refuse` prints one line naming the
setting and exits with status 2 (`python app.py`, `waitress-serve`, `flask run` and every CLI
command alike). A bad value in `config` is a bad argument to `create_app`: `SettingError`, a
`ValueError`.
"""
import importlib.util
import math
import os
import re
import sys
from urllib.parse import parse_qs, urlsplit

import limits
import limits.storage
import limits.util
import urllib3.exceptions
import urllib3.util


class SettingError(ValueError):
    """A setting's value breaks its rule."""

    def __init__(self, name, problem):
        super().__init__(f"setting {name}: {problem}")
        self.name = name
        self.problem = problem


class Invalid(ValueError):
    """Raised by a rule: what is wrong with the value (the caller names the setting)."""


def shown(value, limit=60):
    """A value as it may appear in an error: quoted, control characters escaped, shortened."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# --- the rules: each takes the environment's text or a Python value from `config`, and
# answers the value the app uses, or raises Invalid ----------------------------------------

# Numbers in the environment are plain ASCII: Python's int() and float() also take other
# scripts' digits ("١٢"), fullwidth ones and underscores ("1_0"), which no operator means.
INTEGER_TEXT = re.compile(r"[ \t]*[+-]?[0-9]+[ \t]*", re.ASCII)
NUMBER_TEXT = re.compile(r"[ \t]*[+-]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?[ \t]*", re.ASCII)


def integer(minimum, maximum=None):
    def rule(value):
        if isinstance(value, str) and INTEGER_TEXT.fullmatch(value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"{shown(value)} is not a whole number")
        if value < minimum:
            raise Invalid(f"must be at least {minimum}, not {value}")
        if maximum is not None and value > maximum:
            raise Invalid(f"must be at most {maximum}, not {value}")
        return value

    return rule


def number(above, maximum, minimum=None):
    """A finite number greater than `above`, at least `minimum` (when given), at most
    `maximum`. As text: ASCII digits with an optional decimal part and exponent ("24", "0.5",
    "1e3")."""

    def rule(given):
        value = given
        if isinstance(given, str):
            value = float(given) if NUMBER_TEXT.fullmatch(given) else None
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise Invalid(f"{shown(given)} is not a number")
        if not above < value <= maximum or (minimum is not None and value < minimum):
            raise Invalid(f"must be {lowest_allowed(above, minimum, value)} and at most "
                          f"{maximum:g}, not {value:.6g}")
        return value

    return rule


def lowest_allowed(above, minimum, value):
    if minimum is None:
        return f"more than {above}"
    if value <= above:
        return f"more than {above:g} (at least {minimum:.6g})"
    return f"at least {minimum:.6g}"


TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def boolean(value):
    if isinstance(value, bool):
        return value
    word = value.strip().lower() if isinstance(value, str) else None
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise Invalid(f"{shown(value)} is not one of {'/'.join(TRUE_WORDS + FALSE_WORDS)}")


def text(value):
    if not isinstance(value, str):
        raise Invalid(f"{shown(value)} is not text")
    return value


def one_of(*choices):
    def rule(value):
        word = text(value).strip().upper()
        if word not in choices:
            raise Invalid(f"{shown(value)} is not one of {', '.join(choices)}")
        return word

    return rule


def rate_limit(value):
    """A limit as flask-limiter reads it: "20 per minute", "20/minute; 500/day"."""
    try:
        if not text(value).isascii():  # int() would read other scripts' digits
            raise ValueError(value)
        parsed = limits.parse_many(value)
    except ValueError:
        raise Invalid(f"{shown(value)} is not a rate limit such as '20 per minute'") from None
    if any(limit.amount < 1 for limit in parsed):
        raise Invalid("a limit of 0 refuses every request; set RATELIMIT_ENABLED=false "
                      "to turn the limits off")
    # `limits` reads "1 per 0 minute" as "1 per minute": a window of 0 is a typo to refuse.
    for part in limits.util.SEPARATORS.split(value):
        match = limits.util.SINGLE_EXPR.match(part)
        multiples = match and match.group(3)
        if multiples and int(multiples) == 0:
            raise Invalid(f"{shown(part.strip())} has a window of 0; "
                          "use one such as '20 per minute'")
    return value


def storage_uri(value):
    """Where flask-limiter keeps its counters: a scheme the `limits` library knows, with the
    Python package that scheme needs."""
    scheme = urlsplit(text(value)).scheme
    storage = limits.storage.SCHEMES.get(scheme)
    if storage is None or scheme.startswith("async+"):
        known = sorted(name for name in limits.storage.SCHEMES if not name.startswith("async+"))
        raise Invalid(f"{shown(value)} is not a storage URI such as memory:// or "
                      f"redis://host:6379/0 (schemes: {', '.join(known)})")
    packages = list(getattr(storage, "DEPENDENCIES", []))
    if packages and not any(importlib.util.find_spec(package) for package in packages):
        raise Invalid(f"{scheme}:// needs the Python package {' or '.join(packages)}")
    if scheme != "memory" and "unix" not in scheme:
        check_hosts(value)
    options = storage_options(value)  # refuses a bad timeout in the URL
    if scheme.startswith("redis") and "cluster" not in scheme:
        # Made as flask-limiter will make it (no connection yet: a cluster's would connect,
        # so it is left to start, where `ratelimits.setup_limits` refuses what fails).
        try:
            limits.storage.storage_from_string(value, **options)
        except Exception as error:  # any failure is the value's
            raise Invalid(f"cannot be used: {one_line(error, value)}") from None
    return value


# A Redis answers a rate-limit call in well under a millisecond on a LAN, a few when busy:
# half a second is a hundred times that, so a slow store still counts, while one that stopped
# answering (frozen, a stuck host, a half-open connection) costs the request that finds it so
# at most this long before the process counts in memory. Without a timeout it waited for
# ever, and on SQLite every request waits its turn behind that one (server/lane.py).
STORE_TIMEOUT_SECONDS = 0.5
STORE_TIMEOUTS = ("socket_timeout", "socket_connect_timeout")
# Seconds, as a URL's query gives them; at most 5: on SQLite the request that finds the store
# frozen waits that long in the request lane, and every other request with it.
store_timeout = number(0, 5)


# The options a Redis URL's query may give (redis-py's connection settings).
REDIS_URL_OPTIONS = {"db", "username", "password", "socket_timeout", "socket_connect_timeout",
                     "socket_keepalive", "health_check_interval", "max_connections",
                     "client_name", "protocol", "retry_on_timeout"}


def storage_options(uri):
    """The keyword options for the store of a valid `uri` (flask-limiter's
    RATELIMIT_STORAGE_OPTIONS): for Redis and Valkey, the short timeouts above, or those the
    URL's query gives (`?socket_timeout=2&socket_connect_timeout=1`). Raises Invalid for a
    timeout there that is not a number of seconds above 0, at most 5."""
    parts = urlsplit(uri)
    if not parts.scheme.startswith(("redis", "valkey")):
        return {}
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(name for name in query
                     if name not in REDIS_URL_OPTIONS and not name.startswith("ssl_"))
    if unknown:
        # redis-py would hand it to every connection, which then fails each call: the shared
        # store silently never used.
        raise Invalid(f"the URL's option {shown(unknown[0])} is not a Redis connection option "
                      f"({', '.join(sorted(REDIS_URL_OPTIONS))} or ssl_...)")
    timeouts = {}
    for name in STORE_TIMEOUTS:
        try:
            given = [store_timeout(text) for text in query.get(name, [])]
        except Invalid as error:
            raise Invalid(f"the URL's {name}: {error}") from None
        # redis-py's from_url reads the first value itself, over any option; `limits` reads
        # none for a sentinel or a cluster, hence passing it here too.
        timeouts[name] = given[0] if given else STORE_TIMEOUT_SECONDS
    options = dict(timeouts)
    if "sentinel" in parts.scheme:
        # `limits` passes the sentinels a sentinel_kwargs of its own, so redis-py gives them
        # none of the timeouts above: the sentinels get them here.
        options["sentinel_kwargs"] = dict(timeouts)
    if parts.scheme == "redis+cluster":
        # redis-py's cluster client retries a timeout 3 times with up to 10 s of backoff: a
        # request would wait for all of them. Fail at once; the process counts in memory.
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        options["retry"] = Retry(NoBackoff(), 0)
    return options


def check_hosts(uri):
    """Every host[:port] of a storage URI (sentinel and cluster URIs list several, by commas)
    names a host and, if any, a port from 1 to 65535."""
    netloc = urlsplit(uri).netloc.rpartition("@")[2]
    for place in netloc.split(","):
        parts = urlsplit(f"//{place}")
        try:
            port = parts.port
        except ValueError:  # not a number, or past 65535
            port = 0
        if not parts.hostname:
            raise Invalid("needs a host, such as redis://127.0.0.1:6379/0")
        if port == 0:
            raise Invalid("the port is not a number from 1 to 65535")


def one_line(error, uri):
    """An exception's message on one line (quoted, shortened); only its type when the message
    holds the URI's password."""
    message = str(error)
    secret = urlsplit(uri).password
    if not message or (secret and secret in message):
        return type(error).__name__
    return shown(message, 120)


def database_url(value):
    """sqlite:////absolute/path.db or postgresql://user:pass@host:5432/db. The value is never
    shown: it may hold a password."""
    if value is None:
        return None
    parts = urlsplit(text(value))
    if parts.scheme == "sqlite":
        if parts.path in ("", "/"):
            raise Invalid("a sqlite:/// URL needs a file path, e.g. sqlite:////var/lib/x.db")
        if "?" in value or "#" in value:
            raise Invalid("a sqlite:/// URL takes no parameters (?...) nor fragment (#...)")
        return value
    if parts.scheme in ("postgres", "postgresql"):
        try:
            port = parts.port
        except ValueError:  # not a number, or past 65535
            port = 0
        if port == 0:
            raise Invalid("the port is not a number from 1 to 65535")
        # (A missing driver is said when the database is first used, so that --help and the
        # commands that need no database still work: dbtrouble.describe_failure.)
        return value
    raise Invalid(f"the scheme {shown(parts.scheme)} is not sqlite, postgres or postgresql")


ADMIN_TOKEN_MIN_LENGTH = 32


def secret_token(value):
    """Unset (or empty): off (the admin API; webhooks, which then need no secret). Otherwise a
    long secret sent in a header or keying signatures. The value is never shown."""
    if value is None or value == "":
        return None
    token = text(value)
    if not re.fullmatch(r"[\x21-\x7e]+", token):
        raise Invalid("must be printable ASCII without spaces")
    if len(token) < ADMIN_TOKEN_MIN_LENGTH:
        raise Invalid(f"must be at least {ADMIN_TOKEN_MIN_LENGTH} characters "
                      f"(it has {len(token)})")
    return token


ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:\d{1,5})?")


def origins(value):
    """Comma-separated origins, each scheme://host[:port] with no path (what a browser sends
    in its Origin header)."""
    for origin in text(value).split(","):
        origin = origin.strip()
        if origin and not ORIGIN.fullmatch(origin):
            raise Invalid(f"{shown(origin)} is not an origin such as https://app.example.com "
                          "(http or https, a host, an optional port, no path)")
    return value


def public_url(value):
    """Where agents reach this service, for the sign-in links `agents add` prints:
    http(s)://host[:port][/path], kept without a trailing slash."""
    url = text(value).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment or parts.username is not None:
        raise Invalid("must be an http(s) URL with a host and no user, query or fragment, "
                      "such as https://support.example.com")
    return url


WEBHOOK_URL_MAX_LENGTH = 2000
WEBHOOK_SECRET_MIN_LENGTH = ADMIN_TOKEN_MIN_LENGTH  # (both are `secret_token`s)


def webhook_urls(value):
    """Comma-separated http(s) URLs, each with a host; the distinct ones, in order, as a
    tuple (empty: no webhooks). A URL's path and query often hold its secret: an error shows
    which URL (by its place in the list) and its scheme and host, never the rest."""
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        value = ",".join(value)
    urls = []
    for number, url in enumerate(text(value).split(","), start=1):
        url = url.strip(" \t")
        if url:
            problem = webhook_url_problem(url)
            if problem:
                raise Invalid(f"URL {number} ({shown_place(url)}) {problem}")
            if url not in urls:
                urls.append(url)
    return tuple(urls)


def webhook_url_problem(url):
    """What is wrong with one webhook URL, as the sender's HTTP library reads it, or None."""
    if len(url) > WEBHOOK_URL_MAX_LENGTH or not url.isascii() or not url.isprintable() \
            or " " in url:
        return (f"is not printable ASCII without spaces, at most {WEBHOOK_URL_MAX_LENGTH} "
                "characters")
    try:
        parts = urllib3.util.parse_url(url)
    except urllib3.exceptions.LocationParseError:  # a bracket left open, a port past 65535
        return "does not name a host and port"
    if parts.scheme not in ("http", "https") or parts.fragment is not None:
        return "is not an http:// or https:// URL (without a #fragment)"
    if not parts.host:
        return "does not name a host"
    if parts.port == 0:
        return "has a port that is not a number from 1 to 65535"
    return None


def shown_place(url):
    """Only the scheme and host of a URL, for messages (never a user, password, path or
    query); only the scheme when it has no host that can be read."""
    if "://" not in url:
        return "without a scheme"
    scheme = url.partition("://")[0]
    try:
        host = urllib3.util.parse_url(url).host
    except urllib3.exceptions.LocationParseError:
        host = None
    return shown(f"{scheme}://{host}/..." if host else f"{scheme}://...", 80)


# name: (default, rule)
SETTINGS = {
    "DATABASE_URL": (None, database_url),  # None: a SQLite file in the instance folder
    "SQLITE_SYNCHRONOUS": ("NORMAL", one_of("NORMAL", "FULL")),
    "DB_POOL_SIZE": (32, integer(1, 1000)),
    "MAX_CONTENT_LENGTH": (64 * 1024, integer(1, 1024 * 1024 * 1024)),
    "CORS_ORIGINS": ("", origins),
    "PUBLIC_URL": (None, public_url),
    "ADMIN_TOKEN": (None, secret_token),
    "LONGPOLL_MAX_WAITERS": (1000, integer(0, 10_000)),
    "LONGPOLL_MAX_WAITERS_PER_CUSTOMER": (2, integer(0, 10_000)),
    "LONGPOLL_MAX_WAITERS_PER_AGENT": (4, integer(0, 10_000)),
    # The percentage of LONGPOLL_MAX_WAITERS that agents' polls may hold together: the rest
    # is kept for customers.
    "LONGPOLL_AGENT_SHARE_PERCENT": (25, integer(0, 100)),
    "MAX_POLL_PAGE_BYTES": (256 * 1024, integer(1024, 64 * 1024 * 1024)),
    "IDEMPOTENCY_KEY_HOURS": (24, number(0, 24 * 365 * 10, minimum=1 / 3600)),  # 1 s up
    "MAX_OPEN_CHATS": (20, integer(1, 1_000_000)),
    # Waitress refuses headers past 64 KiB itself (in plain text): above that, this is moot.
    "MAX_HEADER_BYTES": (8 * 1024, integer(1024, 64 * 1024)),
    "ACCESS_LOG": (True, boolean),
    "RATELIMIT_ENABLED": (True, boolean),
    "RATELIMIT_STORAGE_URI": ("memory://", storage_uri),
    "RATELIMIT_AUTH_FAILURES": ("20 per minute", rate_limit),
    "RATELIMIT_CUSTOMER_SENDS": ("60 per minute", rate_limit),
    "RATELIMIT_CUSTOMER_POLLS": ("120 per minute", rate_limit),
    "RATELIMIT_AGENT_CALLS": ("600 per minute", rate_limit),
    "EVENT_RETENTION_DAYS": (7, number(0, 3650, minimum=1 / 86400)),  # 1 s up
    "WEBHOOK_URL": ((), webhook_urls),
    "WEBHOOK_SECRET": (None, secret_token),
    "WEBHOOK_SENDER": (True, boolean),
    "WEBHOOK_INCLUDE_NOTES": (False, boolean),
    "WEBHOOK_RETRY_HOURS": (24, number(0, 24 * 30, minimum=1 / 3600)),
    "WEBHOOK_FIRST_RETRY_SECONDS": (10, number(0, 3600, minimum=0.01)),
    # A delivery in flight is the claiming sender's for this long; past it (the sender died),
    # another may send it again. More than the 5 s a delivery may take.
    "WEBHOOK_CLAIM_SECONDS": (30, number(0, 3600, minimum=6)),
}

# Settings that only make sense together: (the settings involved, a rule over all the values,
# the setting to name and what is wrong with it).
JOINT_RULES = [
    (("WEBHOOK_URL", "WEBHOOK_SECRET"),
     lambda values: not values["WEBHOOK_URL"] or values["WEBHOOK_SECRET"],
     "WEBHOOK_SECRET", "is required when WEBHOOK_URL is set: at least "
                       f"{WEBHOOK_SECRET_MIN_LENGTH} characters, the same on every instance"),
]

DEFAULTS = {name: default for name, (default, _) in SETTINGS.items()}


def check(name, value):
    """`value` as the app uses it; raises SettingError if it breaks the setting's rule."""
    try:
        return SETTINGS[name][1](value)
    except Invalid as error:
        raise SettingError(name, str(error)) from None


def load(config=None):
    """The settings in force: defaults, then the environment, then `config`; each value
    checked. A setting `config` gives is not read from the environment at all."""
    config = dict(config or {})
    values = dict(DEFAULTS)
    for name in SETTINGS:
        environment_text = os.environ.get(name)
        if name in config or environment_text in (None, ""):
            continue
        try:
            values[name] = check(name, environment_text)
        except SettingError as error:
            refuse(name, error.problem)
    for name, value in config.items():
        values[name] = check(name, value) if name in SETTINGS else value
    for involved, holds, name, problem in JOINT_RULES:
        if not holds(values):
            if any(setting in config for setting in involved):  # create_app's argument
                raise SettingError(name, problem)
            refuse(name, problem)
    return values


def refuse(name, problem):
    """Stop at start on a bad setting: one line naming it and what is wrong, exit status 2, no
    traceback (`python app.py`, `waitress-serve`, `flask run` and every CLI command alike)."""
    print(f"error: setting {name}: {problem}", file=sys.stderr)
    raise SystemExit(2)
