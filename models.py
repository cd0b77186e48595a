"""Storage: the database object, the models, and how a transaction takes its locks.

Backend differences live here and nowhere else: `configure_database` picks the SQLite pragmas
or the PostgreSQL settings, and `write_transaction` picks how a read-then-write transaction
takes its lock. Hand-written SQL lives in `storage/queries.py`.
"""
import contextlib
import datetime
import errno
import logging
import os
import re
import secrets
import stat
import threading
from urllib.parse import urlsplit

import peewee
from peewee import (
    BigIntegerField,
    CharField,
    DatabaseProxy,
    DateTimeField,
    DoubleField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)
from playhouse.db_url import connect as connect_url

from storage.trouble import WritesFailing, database_trouble

database = DatabaseProxy()
logger = logging.getLogger(__name__)

CHAT_OPEN = "open"
CHAT_CLOSED = "closed"
SENDER_USER = "user"
SENDER_AGENT = "agent"
AGENT_TOKEN_PREFIX = "szagent_"


def utcnow():
    """Naive UTC, the same on SQLite and PostgreSQL `timestamp` columns."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def as_datetime(value):
    """A timestamp column as read: text on SQLite, a datetime on PostgreSQL."""
    return datetime.datetime.fromisoformat(value) if isinstance(value, str) else value


def iso_utc(moment):
    """A naive UTC datetime as the API writes it: milliseconds and a Z."""
    return moment.isoformat(timespec="milliseconds") + "Z"


def new_public_id(prefix):
    """An opaque, unguessable id: 128 random bits as 22 URL-safe characters."""
    return f"{prefix}-{secrets.token_urlsafe(16)}"


def is_public_id(value, prefix):
    """Whether `value` has the shape `new_public_id(prefix)` gives."""
    return PUBLIC_ID.fullmatch(value) is not None and value.startswith(f"{prefix}-")


PUBLIC_ID = re.compile(r"[a-z]+-[A-Za-z0-9_-]{22}")


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False


# A public id's length at most (chats', messages' and notes' alike): what a URL or a body may
# name, checked before any query.
MAX_PUBLIC_ID_LENGTH = 64
# An email's length in characters (not bytes: 170 x "é" is 182 characters and 352 bytes), the
# one rule for provisioning a user (schemas.py) and for the lookup that authenticates them.
MAX_EMAIL_LENGTH = 254


class User(BaseModel):
    # Always stored stripped and lower-cased (accounts.normalize_email).
    email = CharField(max_length=MAX_EMAIL_LENGTH, unique=True)
    # The HMAC key, kept exactly as provisioned; NULL once the user is removed, which revokes
    # access but keeps the chat history for the agents.
    uuid = CharField(max_length=36, null=True)
    name = CharField(max_length=200, null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class Agent(BaseModel):
    name = CharField(max_length=64, unique=True)
    display_name = CharField(max_length=200, null=True)  # the only agent detail customers see
    # SHA-256 of the bearer token, hex; NULL once the agent is removed.
    token_digest = CharField(max_length=64, unique=True, null=True)
    created_at = DateTimeField(default=utcnow)


class Chat(BaseModel):
    public_id = CharField(max_length=MAX_PUBLIC_ID_LENGTH, unique=True)
    user = ForeignKeyField(User, backref="chats", index=False)  # led by (user, updated_at)
    status = CharField(max_length=8, default=CHAT_OPEN)
    name = CharField(max_length=200, null=True)  # as sent with create: a name or a plan name
    plan_id = BigIntegerField(null=True)
    account_created_at = DoubleField()  # the customer's account creation time, Unix seconds
    last_seq = IntegerField(default=0)  # the seq of the newest message; allocates the next one
    # Read marks: the customer, and the agents, have read up to here. The database has DEFAULT 0
    # since version 2 added them to chats that already existed; declared so the models match.
    customer_read_seq = IntegerField(default=0, constraints=[peewee.SQL("DEFAULT 0")])
    agent_read_seq = IntegerField(default=0, constraints=[peewee.SQL("DEFAULT 0")])
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)  # the last activity: orders the chat lists
    # The agent who has the chat, or NULL (unassigned). Led by the index below.
    assignee = ForeignKeyField(Agent, null=True, index=False)
    # When the customer's oldest unanswered message came in: set by a customer message when
    # NULL, cleared by an agent's reply (a note leaves it). NULL: the agents spoke last.
    waiting_since = DateTimeField(null=True)
    # The number of the newest note; allocates the next one, as last_seq does for messages.
    last_note = IntegerField(default=0, constraints=[peewee.SQL("DEFAULT 0")])

    class Meta:
        # storage/migrations.py creates the real schema; tests/storage/test_schema.py checks it
        # these declarations, index names included.
        indexes = ((("user", "updated_at"), False), (("updated_at", "id"), False),
                   (("status", "updated_at", "id"), False),
                   (("assignee", "status", "updated_at"), False),
                   (("status", "waiting_since", "id"), False))


class Message(BaseModel):
    public_id = CharField(max_length=MAX_PUBLIC_ID_LENGTH, unique=True)
    chat = ForeignKeyField(Chat, backref="messages", index=False)  # led by (chat, seq)
    seq = IntegerField()
    sender = CharField(max_length=8)
    agent = ForeignKeyField(Agent, null=True)  # who wrote it, when sender is "agent"
    body = TextField()
    image_url = TextField(null=True)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("chat", "seq"), True),)


class Note(BaseModel):
    """An agent's internal note on a chat. Notes live apart from messages so that a customer
    never learns of one: they take no `seq`, move no read mark and touch no `updated_at`."""

    public_id = CharField(max_length=MAX_PUBLIC_ID_LENGTH, unique=True)
    chat = ForeignKeyField(Chat, index=False)  # led by (chat, number)
    number = IntegerField()  # 1, 2, 3, ... in each chat, in commit order: the notes' cursor
    agent = ForeignKeyField(Agent, index=False)
    after_seq = IntegerField()  # the chat's last message when it was written: its place
    body = TextField()
    created_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("chat", "number"), True),)


class SavedReply(BaseModel):
    """A canned answer that agents insert by typing `/shortcut`; shared by all agents."""

    shortcut = CharField(max_length=32, unique=True)
    text = TextField()
    updated_by = ForeignKeyField(Agent, null=True, index=False)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class IdempotencyKey(BaseModel):
    """A client's Idempotency-Key and the answer its first request got."""

    scope = CharField(max_length=40)  # who sent it: "user:<id>" or "agent:<id>"
    key = CharField(max_length=255)
    fingerprint = CharField(max_length=64)  # SHA-256 of method, path and body
    response = TextField(null=True)  # the `data` answered, as JSON
    created_at = DateTimeField(default=utcnow, index=True)

    class Meta:
        indexes = ((("scope", "key"), True),)


class Event(BaseModel):
    """One entry of the event log (events/__init__.py). The id is not a sequence's: the writing
    transaction takes it from `EventCounter`, so ids commit in order and with no gap."""

    id = BigIntegerField(primary_key=True)
    type = CharField(max_length=32)
    chat_id = BigIntegerField(null=True)  # orders webhook deliveries per chat
    created_at = DateTimeField(default=utcnow)
    body = TextField()  # the event exactly as sent: {"id", "type", "created_at", "data"}


class EventCounter(BaseModel):
    """One row (id 1): the id of the newest event. Bumping it is the lock that makes event
    writers commit one after the other."""

    last_id = BigIntegerField(default=0)


class WebhookEndpoint(BaseModel):
    """A URL of WEBHOOK_URL, and how far the event log has been copied into its deliveries."""

    url = CharField(max_length=2000, unique=True)
    fanned_out_through = BigIntegerField(default=0)  # every event up to this id has a delivery
    created_at = DateTimeField(default=utcnow)
    last_error = TextField(null=True)  # the latest failed attempt's, kept after later successes
    last_error_at = DateTimeField(null=True)


class WebhookDelivery(BaseModel):
    """One event for one endpoint: pending (new, in flight or waiting to be retried),
    delivered or failed."""

    endpoint = ForeignKeyField(WebhookEndpoint, index=False)  # led by the indexes below
    event_id = BigIntegerField()
    chat_id = BigIntegerField(null=True)
    state = CharField(max_length=10)
    # 1 on the oldest pending delivery of its chat (each one without a chat too): only a head
    # is ever claimed, so a chat's events go out in order, and a backlog behind the heads
    # costs a claim nothing.
    head = IntegerField(default=0)
    attempts = IntegerField(default=0)
    next_attempt_at = DateTimeField()
    claim = CharField(max_length=32, null=True)  # the sender that has it in flight
    claimed_until = DateTimeField(null=True)  # ... until then; after that anyone may take it
    created_at = DateTimeField(default=utcnow)
    last_attempt_at = DateTimeField(null=True)
    last_status = IntegerField(null=True)  # the receiver's HTTP status, if it answered
    last_error = TextField(null=True)
    delivered_at = DateTimeField(null=True)

    class Meta:
        indexes = ((("endpoint", "event_id"), True),
                   (("endpoint", "state", "head", "next_attempt_at"), False),
                   (("endpoint", "state", "chat_id", "event_id"), False))


def is_sqlite():
    return database.obj is not None and database.obj.__class__.__name__.endswith("SqliteDatabase")


def writes_one_at_a_time():
    """Whether the database takes one writer at a time, so that the server runs one request at
    a time (server/lane.py): SQLite's one writer, which a second would wait for while holding
    the GIL's turns; PostgreSQL takes many."""
    return is_sqlite()


SQLITE_CACHE_KIB = 512
SQLITE_BACKSTOP_CHECKPOINT_PAGES = 20_000  # 80 MB of log
# Called when the models move to another database: threads that use the old one stop
# (storage/checkpoints.py, storage/changes.py and events/webhooks.py add theirs).
database_switch_hooks = []


def configure_database(url, sqlite_synchronous="NORMAL", pool_size=32, close_current=True):
    """Point the models at `url` through a connection pool (storage/migrations.py makes the tables).

    A pool, because opening and closing a SQLite connection per request costs about half the
    request (closing the last WAL connection checkpoints the log). Connections are handed to
    whichever waitress thread asks, hence `check_same_thread=False`.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    pooled_url = f"{scheme}+pool{url[len(parts.scheme):]}"
    options = {"max_connections": pool_size, "timeout": 10}  # wait up to 10 s for a free one
    if scheme == "sqlite":
        options.update(
            check_same_thread=False,
            returning_clause=True,
            # A small page cache per connection: there is one connection per busy thread,
            # and the OS page cache holds the file anyway (2 MB each kept RSS over 80 MB).
            pragmas=[("journal_mode", "wal"), ("foreign_keys", 1),
                     ("busy_timeout", 10000), ("synchronous", sqlite_synchronous),
                     ("cache_size", -SQLITE_CACHE_KIB),
                     # Requests leave checkpoints to `BackgroundCheckpoints`; this is only the
                     # backstop that bounds the log should that thread fall behind.
                     ("wal_autocheckpoint", SQLITE_BACKSTOP_CHECKPOINT_PAGES)],
        )
    elif scheme in ("postgres", "postgresql"):
        # Without the driver installed, the first connection raises ImproperlyConfigured
        # (dbtrouble.describe_failure says what to install); building the app needs none.
        options.update(stale_timeout=300)
    else:
        raise ValueError(f"unsupported DATABASE_URL scheme: {parts.scheme!r}")
    if database.obj is not None and close_current:
        for stop_watching_it in database_switch_hooks:
            stop_watching_it()
        database.obj.close_all()
        database_trouble.reset()
    database.initialize(connect_url(pooled_url, **options))
    return database.obj


def sqlite_path():
    """The SQLite database's file, or None (PostgreSQL, or an in-memory database)."""
    if not is_sqlite() or database.obj.database in ("", ":memory:"):
        return None
    return database.obj.database


def sqlite_file_missing():
    path = sqlite_path()
    return path is not None and not os.path.exists(path)


def create_database_folder():
    """Make the folder and the empty SQLite file before the schema's first creation, readable
    by this user only: the file holds the uuids that sign requests. SQLite gives the -wal and
    -shm files it makes the database file's mode (an empty file is an empty database)."""
    path = sqlite_path()
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), folder)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def sqlite_file_mode_too_open():
    """The SQLite file's permission bits when its group or others may use it, else None."""
    path = sqlite_path()
    if path is None:
        return None
    try:
        status = os.stat(path)
    except OSError:
        return None
    mode = stat.S_IMODE(status.st_mode)
    return mode if stat.S_ISREG(status.st_mode) and mode & 0o077 else None


def describe_database():
    """Where the data lives, for the start-up log: never the password."""
    db = database.obj
    if is_sqlite():
        return f"SQLite file {db.database}"
    params = db.connect_params
    return f"PostgreSQL database {db.database} on {params.get('host', 'local socket')}"


# SQLite has one writer at a time. Writers of this process queue on this lock, which hands
# over at once, instead of in SQLite's busy handler, which sleeps up to 100 ms between tries
# (that made p99 latency seconds under load). The busy timeout still arbitrates between
# processes. Re-entrant, so that a nested write transaction (a savepoint) passes.
sqlite_writer = threading.RLock()


@contextlib.contextmanager
def write_transaction():
    """A transaction for work that reads and then writes.

    On SQLite it starts IMMEDIATE: a DEFERRED one that reads first fails with "database is
    locked" when another writer got in between, whatever the busy timeout. PostgreSQL takes row
    locks as it goes (see `queries.BUMP_CHAT`).
    """
    with locked_transaction() as transaction:
        yield transaction
    database_trouble.wrote()  # the database takes writes again, if it had stopped


@contextlib.contextmanager
def locked_transaction():
    """`write_transaction`'s locking, without counting as a write that succeeded."""
    if not is_sqlite():
        with database.atomic() as transaction:
            yield transaction
    else:
        with sqlite_writer, database.atomic("IMMEDIATE") as transaction:
            yield transaction


def migration_lock():
    """Inside a write transaction: keep other processes out of the schema until it ends.

    SQLite's IMMEDIATE transaction already holds the only write lock; PostgreSQL needs an
    advisory lock, or two instances starting together would both run a migration.
    """
    if not is_sqlite():
        database.execute_sql("SELECT pg_advisory_xact_lock(727274)")


# --- when the database fails ---------------------------------------------------------------

class ProbeDone(Exception):
    pass


# Takes the write lock without writing a row: SQLite and PostgreSQL both refuse it on a
# database that is read-only. schema_version exists from the first start on.
WRITE_PROBE = 'UPDATE "schema_version" SET "version" = "version" WHERE 1 = 0'


def database_health():
    """Raise the database error requests would meet now, or return: the database answers,
    takes writes, and no request has failed on it since the last write that succeeded (a full
    or corrupt disk shows only when a request needs the space or the page)."""
    database.execute_sql("SELECT 1")
    with contextlib.suppress(ProbeDone), locked_transaction():
        database.execute_sql(WRITE_PROBE)
        raise ProbeDone()  # roll back
    failure = database_trouble.recent_failure()
    if failure is not None:
        raise WritesFailing(f"requests failed on the database a moment ago: {failure}")


check_database = database_health

