"""Schema versions, the migrations from each to the next, and copying a whole database.

The schema's version is recorded in `schema_version`. Every change to it ships as a function
here, applied in order at start and by `flask --app app db upgrade`, on SQLite and PostgreSQL
alike. Each migration spells out its own tables and columns (frozen copies, not the live
models), so that migrating an old database always builds what that version built, whatever
the models look like later.
"""
from types import SimpleNamespace

from peewee import (
    SQL,
    BigIntegerField,
    CharField,
    DateTimeField,
    DoubleField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)
from playhouse.migrate import SchemaMigrator, SqliteMigrator, migrate

import models


class SchemaVersion(Model):
    version = IntegerField()
    applied_at = DateTimeField(default=models.utcnow)

    class Meta:
        table_name = "schema_version"


# Each version's tables are frozen in a function of their own, under the live models' class
# names: peewee names indexes after the class, and these names must be the ones the live
# models (and the first release, which made its tables from them) give.

def frozen_version_1():
    """The two spec endpoints."""

    class User(Model):
        email = CharField(max_length=254, unique=True)
        uuid = CharField(max_length=36, null=True)
        name = CharField(max_length=200, null=True)
        created_at = DateTimeField()
        updated_at = DateTimeField()

    class Chat(Model):
        public_id = CharField(max_length=64, unique=True)
        user = ForeignKeyField(User)
        status = CharField(max_length=8)
        name = CharField(max_length=200, null=True)
        plan_id = BigIntegerField(null=True)
        account_created_at = DoubleField()
        last_seq = IntegerField(default=0)
        created_at = DateTimeField()
        updated_at = DateTimeField()

        class Meta:
            indexes = ((("user", "updated_at"), False),)

    class Message(Model):
        public_id = CharField(max_length=64, unique=True)
        chat = ForeignKeyField(Chat)
        seq = IntegerField()
        sender = CharField(max_length=8)
        body = TextField()
        image_url = TextField(null=True)
        created_at = DateTimeField()

        class Meta:
            indexes = ((("chat", "seq"), True),)

    return SimpleNamespace(User=User, Chat=Chat, Message=Message, models=[User, Chat, Message])


version_1 = frozen_version_1()


def initial_schema(database, migrator):
    database.create_tables(version_1.models)


def frozen_version_2():
    """Two-way chat: agents, read marks, idempotent retries."""

    class Agent(Model):
        name = CharField(max_length=64, unique=True)
        display_name = CharField(max_length=200, null=True)
        token_digest = CharField(max_length=64, unique=True, null=True)
        created_at = DateTimeField()

    class IdempotencyKey(Model):
        scope = CharField(max_length=40)
        key = CharField(max_length=255)
        fingerprint = CharField(max_length=64)
        response = TextField(null=True)
        created_at = DateTimeField(index=True)

        class Meta:
            table_name = "idempotency_key"
            indexes = ((("scope", "key"), True),)

    return SimpleNamespace(Agent=Agent, IdempotencyKey=IdempotencyKey,
                           models=[Agent, IdempotencyKey])


version_2 = frozen_version_2()


def zero_default_column():
    return IntegerField(default=0, constraints=[SQL("DEFAULT 0")])


def two_way_chat(database, migrator):
    agent = version_2.Agent
    database.create_tables(version_2.models)
    migrate(
        migrator.add_column("message", "agent_id",
                            ForeignKeyField(agent, field=agent.id, null=True)),
        # NOT NULL DEFAULT 0 in one ALTER: the migrator's default path would rebuild the chat
        # table on SQLite, which the messages' foreign keys forbid.
        migrator.add_column("chat", "customer_read_seq", zero_default_column(),
                            allow_not_null=True),
        migrator.add_column("chat", "agent_read_seq", zero_default_column(),
                            allow_not_null=True),
        migrator.add_index("chat", ("updated_at", "id")),
        migrator.add_index("chat", ("status", "updated_at", "id")),
    )


def drop_redundant_indexes(database, migrator):
    """(chat_id) and (user_id) alone lead (chat_id, seq) and (user_id, updated_at), which serve
    every lookup and foreign-key check they did; each message written kept one more index page
    up to date."""
    migrate(migrator.drop_index("message", "message_chat_id"),
            migrator.drop_index("chat", "chat_user_id"))


# (old name, new name, table, columns, unique): version 2 named these after the frozen class
# (`IdempotencyKey`, peewee's legacy naming); the live models name them after the table.
IDEMPOTENCY_INDEX_RENAMES = [
    ("idempotencykey_created_at", "idempotency_key_created_at", "idempotency_key",
     ("created_at",), False),
    ("idempotencykey_scope_key", "idempotency_key_scope_key", "idempotency_key",
     ("scope", "key"), True),
]


def name_indexes_as_the_models_do(database, migrator):
    """The idempotency_key indexes take the names the live models give them.

    PostgreSQL renames an index in place. SQLite cannot: it builds the new index before
    dropping the old one, so the rows stay as they are and (scope, key) stays unique
    throughout. The chat read marks' DEFAULT 0, which only the database had, is now declared
    by the models too: nothing to change here.
    """
    sqlite = isinstance(migrator, SqliteMigrator)
    for old_name, new_name, table, columns, unique in IDEMPOTENCY_INDEX_RENAMES:
        if sqlite:
            migrate(migrator.add_index(table, columns, unique, name=new_name),
                    migrator.drop_index(table, old_name))
        else:
            migrate(migrator.sql(f'ALTER INDEX "{old_name}" RENAME TO "{new_name}"'))


def frozen_version_5():
    """The event log and webhook deliveries."""

    class Event(Model):
        id = BigIntegerField(primary_key=True)
        type = CharField(max_length=32)
        chat_id = BigIntegerField(null=True)
        created_at = DateTimeField()
        body = TextField()

        class Meta:
            legacy_table_names = False  # index names follow "event"

    class EventCounter(Model):
        last_id = BigIntegerField(default=0)

        class Meta:
            legacy_table_names = False  # index names follow "event_counter"

    class WebhookEndpoint(Model):
        url = CharField(max_length=2000, unique=True)
        fanned_out_through = BigIntegerField(default=0)
        created_at = DateTimeField()
        last_error = TextField(null=True)
        last_error_at = DateTimeField(null=True)

        class Meta:
            legacy_table_names = False  # index names follow "webhook_endpoint"

    class WebhookDelivery(Model):
        endpoint = ForeignKeyField(WebhookEndpoint, index=False)
        event_id = BigIntegerField()
        chat_id = BigIntegerField(null=True)
        state = CharField(max_length=10)
        head = IntegerField(default=0)
        attempts = IntegerField(default=0)
        next_attempt_at = DateTimeField()
        claim = CharField(max_length=32, null=True)
        claimed_until = DateTimeField(null=True)
        created_at = DateTimeField()
        last_attempt_at = DateTimeField(null=True)
        last_status = IntegerField(null=True)
        last_error = TextField(null=True)
        delivered_at = DateTimeField(null=True)

        class Meta:
            legacy_table_names = False  # index names follow "webhook_delivery"
            indexes = ((("endpoint", "event_id"), True),
                       (("endpoint", "state", "head", "next_attempt_at"), False),
                       (("endpoint", "state", "chat_id", "event_id"), False))

    return SimpleNamespace(Event=Event, EventCounter=EventCounter,
                           WebhookEndpoint=WebhookEndpoint, WebhookDelivery=WebhookDelivery,
                           models=[Event, EventCounter, WebhookEndpoint, WebhookDelivery])


version_5 = frozen_version_5()


def event_log(database, migrator):
    """The event log starts empty, at id 0: what happened before it is not replayed."""
    database.create_tables(version_5.models)
    version_5.EventCounter.create(id=1, last_id=0)


def frozen_version_6():
    """The agent workspace: internal notes and saved replies."""

    class Note(Model):
        public_id = CharField(max_length=64, unique=True)
        chat = ForeignKeyField(version_1.Chat, index=False)
        number = IntegerField()
        agent = ForeignKeyField(version_2.Agent, index=False)
        after_seq = IntegerField()
        body = TextField()
        created_at = DateTimeField()

        class Meta:
            legacy_table_names = False  # index names follow "note"
            indexes = ((("chat", "number"), True),)

    class SavedReply(Model):
        shortcut = CharField(max_length=32, unique=True)
        text = TextField()
        updated_by = ForeignKeyField(version_2.Agent, null=True, index=False)
        created_at = DateTimeField()
        updated_at = DateTimeField()

        class Meta:
            legacy_table_names = False  # index names follow "saved_reply"

    return SimpleNamespace(Note=Note, SavedReply=SavedReply, models=[Note, SavedReply])


version_6 = frozen_version_6()

# A chat whose newest message is the customer's has waited since the customer's first message
# after the agents' last one.
BACKFILL_WAITING_SINCE = (
    'UPDATE "chat" SET "waiting_since" = (SELECT MIN(m."created_at") FROM "message" AS m '
    'WHERE m."chat_id" = "chat"."id" AND m."sender" = \'user\' AND m."seq" > COALESCE(('
    'SELECT MAX(a."seq") FROM "message" AS a WHERE a."chat_id" = "chat"."id" '
    'AND a."sender" = \'agent\'), 0)) '
    'WHERE (SELECT l."sender" FROM "message" AS l WHERE l."chat_id" = "chat"."id" '
    'AND l."seq" = "chat"."last_seq") = \'user\'')


def agent_workspace(database, migrator):
    """Assignment and waiting times on chats; notes and saved replies."""
    agent = version_2.Agent
    database.create_tables(version_6.models)
    migrate(
        migrator.add_column("chat", "assignee_id",
                            ForeignKeyField(agent, field=agent.id, null=True, index=False)),
        migrator.add_column("chat", "waiting_since", DateTimeField(null=True)),
        migrator.add_column("chat", "last_note", zero_default_column(), allow_not_null=True),
        migrator.add_index("chat", ("assignee_id", "status", "updated_at")),
        migrator.add_index("chat", ("status", "waiting_since", "id")),
    )
    database.execute_sql(BACKFILL_WAITING_SINCE)


MIGRATIONS = [initial_schema, two_way_chat, drop_redundant_indexes,
              name_indexes_as_the_models_do, event_log, agent_workspace]
# MIGRATIONS[n] takes version n to n + 1
LATEST = len(MIGRATIONS)

FROZEN_MODELS = [SchemaVersion, *version_1.models, *version_2.models, *version_5.models,
                 *version_6.models]


def recorded_version(database):
    """The schema's version; a database made before versions were recorded is version 1."""
    if database.table_exists("schema_version"):
        row = SchemaVersion.select().order_by(SchemaVersion.version.desc()).first()
        if row is not None:
            return row.version
    return 1 if database.table_exists("chat") else 0


def current_version():
    database = models.database
    with database.bind_ctx([SchemaVersion]):
        return recorded_version(database)


class SchemaTooNew(Exception):
    """The database was upgraded by a later release than this one."""

    def __init__(self, version):
        super().__init__(f"the database schema is at version {version}, newer than this "
                         f"release's {LATEST}: run the release that upgraded it")
        self.version = version


def upgrade(target=LATEST):
    """Bring the schema to `target`, one migration per transaction.

    Returns (from, to): the version before the first migration this call applied and the
    version after it, or (now, now) when it applied none (another process may have).
    """
    database = models.database
    models.create_database_folder()  # a new SQLite file starts readable by this user only
    migrator = SchemaMigrator.from_database(database.obj)
    applied_from = None
    with database.bind_ctx(FROZEN_MODELS, bind_refs=False, bind_backrefs=False):
        with models.write_transaction():
            models.migration_lock()
            start = recorded_version(database)
            database.create_tables([SchemaVersion])
        if start > LATEST:
            raise SchemaTooNew(start)
        for version in range(start, target):
            with models.write_transaction():
                models.migration_lock()
                if recorded_version(database) != version:
                    continue  # another process got here first
                MIGRATIONS[version](database, migrator)
                SchemaVersion.create(version=version + 1)
                applied_from = version if applied_from is None else applied_from
        now = recorded_version(database)
    database.close()
    return (now if applied_from is None else applied_from), now

