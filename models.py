"""Storage: the database object, the models and the business rules that write them.

Backend differences live here and nowhere else: `configure_database` picks the SQLite pragmas
or the PostgreSQL settings, and `write_transaction` picks how a read-then-write transaction
takes its lock.
"""
import datetime
import secrets
from urllib.parse import urlsplit

from peewee import (BigIntegerField, CharField, DatabaseProxy, DateTimeField, DoubleField,
                    ForeignKeyField, IntegerField, Model, TextField)
from playhouse.db_url import connect as connect_url

database = DatabaseProxy()

CHAT_OPEN = "open"
CHAT_CLOSED = "closed"
SENDER_USER = "user"
SENDER_AGENT = "agent"


class ChatNotFound(Exception):
    """No chat with that id belongs to the caller (whether it exists for another user or not)."""


class ChatClosed(Exception):
    """The chat is closed; nothing more can be sent into it."""


def utcnow():
    """Naive UTC, the same on SQLite and PostgreSQL `timestamp` columns."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def new_public_id(prefix):
    """An opaque, unguessable id: 128 random bits as 22 URL-safe characters."""
    return f"{prefix}-{secrets.token_urlsafe(16)}"


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False


class User(BaseModel):
    email = CharField(max_length=254, unique=True)  # always stored stripped and lower-cased
    # The HMAC key, kept exactly as provisioned; NULL once the user is removed, which revokes
    # access but keeps the chat history for the agents.
    uuid = CharField(max_length=36, null=True)
    name = CharField(max_length=200, null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class Chat(BaseModel):
    public_id = CharField(max_length=64, unique=True)
    user = ForeignKeyField(User, backref="chats")
    status = CharField(max_length=8, default=CHAT_OPEN)
    name = CharField(max_length=200, null=True)  # as sent with create: a name or a plan name
    plan_id = BigIntegerField(null=True)
    account_created_at = DoubleField()  # the customer's account creation time, Unix seconds
    last_seq = IntegerField(default=0)  # the seq of the newest message; allocates the next one
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("user", "updated_at"), False),)


class Message(BaseModel):
    public_id = CharField(max_length=64, unique=True)
    chat = ForeignKeyField(Chat, backref="messages")
    seq = IntegerField()
    sender = CharField(max_length=8)
    body = TextField()
    image_url = TextField(null=True)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("chat", "seq"), True),)


MODELS = [User, Chat, Message]


def is_sqlite():
    return database.obj is not None and database.obj.__class__.__name__.endswith("SqliteDatabase")


def configure_database(url, sqlite_synchronous="NORMAL", pool_size=32):
    """Point the models at `url` through a connection pool, and create missing tables.

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
            pragmas=[("journal_mode", "wal"), ("foreign_keys", 1),
                     ("busy_timeout", 10000), ("synchronous", sqlite_synchronous)],
        )
    elif scheme in ("postgres", "postgresql"):
        options.update(stale_timeout=300)
    else:
        raise ValueError(f"unsupported DATABASE_URL scheme: {parts.scheme!r}")
    if database.obj is not None:
        database.obj.close_all()
    database.initialize(connect_url(pooled_url, **options))
    database.create_tables(MODELS, safe=True)
    database.close()
    return database.obj


def describe_database():
    """Where the data lives, for the start-up log: never the password."""
    db = database.obj
    if is_sqlite():
        return f"SQLite file {db.database}"
    params = db.connect_params
    return f"PostgreSQL database {db.database} on {params.get('host', 'local socket')}"


def write_transaction():
    """A transaction for work that reads and then writes.

    On SQLite it starts IMMEDIATE: a DEFERRED one that reads first fails with "database is
    locked" when another writer got in between, whatever the busy timeout. PostgreSQL takes row
    locks as it goes (see `add_message`).
    """
    if is_sqlite():
        return database.atomic("IMMEDIATE")
    return database.atomic()


def check_database():
    database.execute_sql("SELECT 1")


# --- users -------------------------------------------------------------------------------

def normalize_email(email):
    return email.strip().lower()


def find_active_user(email):
    """The user who may sign in with this email, or None."""
    return User.get_or_none((User.email == normalize_email(email)) & User.uuid.is_null(False))


def save_user(email, uuid, name=None):
    """Add a user, or give an existing email a new uuid (and name). Returns (user, created)."""
    email = normalize_email(email)
    with write_transaction():
        user = User.get_or_none(User.email == email)
        if user is None:
            return User.create(email=email, uuid=uuid, name=name), True
        user.uuid = uuid
        if name is not None:
            user.name = name
        user.updated_at = utcnow()
        user.save()
        return user, False


def remove_user(email):
    """Revoke a user's access at once. Their chats stay for the agents. True if one was active."""
    return bool(User.update(uuid=None, updated_at=utcnow())
                .where((User.email == normalize_email(email)) & User.uuid.is_null(False))
                .execute())


def active_users():
    return User.select().where(User.uuid.is_null(False)).order_by(User.email)


def has_active_users():
    return active_users().exists()


# --- chats and messages ------------------------------------------------------------------

def find_chat(user, public_id):
    """The user's chat with that id; another user's chat is as missing as one that never was."""
    chat = Chat.get_or_none((Chat.public_id == public_id) & (Chat.user == user))
    if chat is None:
        raise ChatNotFound()
    return chat


def create_chat(user, name, plan_id, account_created_at, body, image_url=None):
    """Open a chat and store its first message, both or neither."""
    with write_transaction():
        now = utcnow()
        chat = Chat.create(public_id=new_public_id("chat"), user=user, name=name,
                           plan_id=plan_id, account_created_at=account_created_at,
                           last_seq=1, created_at=now, updated_at=now)
        message = Message.create(public_id=new_public_id("msg"), chat=chat, seq=1,
                                 sender=SENDER_USER, body=body, image_url=image_url,
                                 created_at=now)
    return chat, message


def add_message(chat, sender, body, image_url=None):
    """Append a message to an open chat with the next gap-free `seq`.

    The UPDATE that bumps `last_seq` is the lock: SQLite's IMMEDIATE transaction holds the
    write lock, PostgreSQL holds the chat row until commit, so concurrent senders into one
    chat take turns and each gets its own seq. It also checks the status in the same
    statement, so a message can never slip into a chat closed a moment before.
    """
    with write_transaction():
        now = utcnow()
        rows = list(Chat.update(last_seq=Chat.last_seq + 1, updated_at=now)
                    .where((Chat.id == chat.id) & (Chat.status == CHAT_OPEN))
                    .returning(Chat.last_seq)
                    .tuples()
                    .execute())
        if not rows:
            raise ChatClosed()
        return Message.create(public_id=new_public_id("msg"), chat=chat.id, seq=rows[0][0],
                              sender=sender, body=body, image_url=image_url, created_at=now)
