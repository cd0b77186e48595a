"""The schema the migrations build is the schema the live models declare.

The tables come from storage/migrations.py alone, while the code reads and writes them through the
models in models.py. Where the two disagree (an index name, a default, a type), a fresh
database is not what the code believes it is, and the next migration would be written against
the wrong schema. So each backend builds the schema into empty databases of its own, once
through the migrations and once from the live models, and compares what introspection finds.

Column order is not compared: it means nothing to the code, and a column added by a migration
comes last on every backend, which PostgreSQL could only change by rebuilding the table.
"""
import os
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from peewee import IntegrityError

import models
from storage import migrations
from support.legacy_schema import build_version_1

LIVE_MODELS = [models.User, models.Agent, models.Chat, models.Message, models.Note,
               models.SavedReply, models.IdempotencyKey,
               models.Event, models.EventCounter, models.WebhookEndpoint,
               models.WebhookDelivery]
# The migrations' own bookkeeping: no live model declares it, so it is checked on its own.
MIGRATIONS_ONLY_TABLES = {"schema_version"}
# CI's server; used when TEST_DATABASE_URL is unset and it answers.
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


# --- empty databases, one backend at a time -------------------------------------------------

def postgres_base_url():
    """The PostgreSQL database whose server hosts this test's databases."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url  # asked for explicitly: a server that does not answer is a failure
    try:
        psycopg.connect(DEFAULT_POSTGRES_URL, connect_timeout=2).close()
    except psycopg.Error as error:
        pytest.skip(f"no PostgreSQL: TEST_DATABASE_URL is unset and {DEFAULT_POSTGRES_URL} "
                    f"does not answer ({error})")
    return DEFAULT_POSTGRES_URL


def sibling_url(base_url, name):
    """`base_url` with another database name: same server, same credentials."""
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def drop_postgres_database(base_url, name):
    # FORCE: a pooled connection left open by a failed test must not keep the database alive.
    with psycopg.connect(base_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_postgres_database(base_url, name):
    drop_postgres_database(base_url, name)  # left over from an interrupted run
    with psycopg.connect(base_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return sibling_url(base_url, name)


@pytest.fixture(params=["sqlite", "postgresql"])
def new_database(request, tmp_path):
    """A factory of empty databases on one backend: `new_database(label)` gives a URL.

    On PostgreSQL each is a database of its own beside TEST_DATABASE_URL's, named after it
    (so that runs against different base databases never collide), dropped after the test.
    """
    if request.param == "sqlite":
        yield lambda label: f"sqlite:///{tmp_path / label}.db"
        return
    base_url = postgres_base_url()
    base_name = urlsplit(base_url).path.lstrip("/")
    created = []

    def create(label):
        created.append(f"{base_name}_schema_{label}")
        return create_postgres_database(base_url, created[-1])

    try:
        yield create
    finally:
        if models.database.obj is not None:
            models.database.close_all()
        for name in created:
            drop_postgres_database(base_url, name)


def migrated(url):
    """`url` with the schema the migrations build."""
    models.configure_database(url)
    migrations.upgrade()
    models.database.close_all()
    return url


def created_from_live_models(url):
    """`url` with the schema the live models declare."""
    models.configure_database(url)
    models.database.create_tables(LIVE_MODELS)
    models.database.close_all()
    return url


# --- what introspection finds ---------------------------------------------------------------

def describe_schema(url):
    """Every fact compared, as {(table, kind, name): description}."""
    models.configure_database(url)
    try:
        database = models.database
        facts = {}
        for table in database.get_tables():
            facts[(table, "table", "")] = "exists"
            facts.update(describe_columns(database, table))
            facts.update(describe_indexes(database, table))
            facts.update(describe_foreign_keys(database, table))
            if not models.is_sqlite():
                facts.update(describe_postgres_constraints(database, table))
        return facts
    finally:
        models.database.close_all()


def describe_columns(database, table):
    facts = {}
    for column in database.get_columns(table):
        # full_type keeps what data_type drops on PostgreSQL: "character varying(64)".
        parts = [column.full_type or column.data_type, "NULL" if column.null else "NOT NULL"]
        if column.default is not None:
            parts.append(f"DEFAULT {column.default}")
        if column.primary_key:
            parts.append("PRIMARY KEY")
        facts[(table, "column", column.name)] = " ".join(parts)
    return facts


def normalized_sql(sql):
    """Index SQL without what differs only in spelling (quotes, spaces, IF NOT EXISTS), so
    that a partial index or another index method still shows."""
    text = " ".join((sql or "").replace('"', "").split())
    return text.replace(" IF NOT EXISTS", "")


def describe_indexes(database, table):
    return {(table, "index", index.name):
            f"{'UNIQUE ' if index.unique else ''}({', '.join(index.columns)}) "
            f"as: {normalized_sql(index.sql)}"
            for index in database.get_indexes(table)}


def describe_foreign_keys(database, table):
    facts = {}
    for key in database.get_foreign_keys(table):
        name = f"{key.column} -> {key.dest_table}.{key.dest_column}"
        description = f"ON DELETE {key.on_delete} ON UPDATE {key.on_update}"
        if key.name:  # SQLite's foreign keys have none
            description += f" named {key.name}"
        facts[(table, "foreign key", name)] = description
    return facts


POSTGRES_CONSTRAINTS = """
    SELECT c.conname, pg_get_constraintdef(c.oid)
    FROM pg_constraint AS c JOIN pg_class AS t ON t.oid = c.conrelid
    WHERE t.relname = %s AND t.relnamespace = current_schema()::regnamespace"""


def describe_postgres_constraints(database, table):
    """Primary key, unique and check constraints with their names: PostgreSQL has them
    beside the indexes, and peewee's introspection does not list them."""
    rows = database.execute_sql(POSTGRES_CONSTRAINTS, (table,)).fetchall()
    return {(table, "constraint", name): definition for name, definition in rows}


def tables(facts):
    return {table for table, _, _ in facts}


def without_tables(facts, names):
    return {key: value for key, value in facts.items() if key[0] not in names}


def assert_same_schema(left, right, left_label, right_label):
    """Fail with one entry per fact that differs, both sides shown."""
    width = max(len(left_label), len(right_label)) + 1
    differences = []
    for key in sorted(left.keys() | right.keys()):
        if left.get(key) != right.get(key):
            table, kind, name = key
            differences.append(
                f"  {table} {kind} {name}\n"
                f"    {left_label + ':':<{width}} {left.get(key, '(missing)')}\n"
                f"    {right_label + ':':<{width}} {right.get(key, '(missing)')}")
    if differences:
        pytest.fail(f"the schema built by {left_label} differs from {right_label}:\n"
                    + "\n".join(differences))


# --- the tests ------------------------------------------------------------------------------

def test_migrations_build_what_the_live_models_declare(new_database):
    by_migrations = describe_schema(migrated(new_database("migrated")))
    by_models = describe_schema(created_from_live_models(new_database("models")))

    assert tables(by_migrations) - tables(by_models) == MIGRATIONS_ONLY_TABLES
    assert_same_schema(without_tables(by_migrations, MIGRATIONS_ONLY_TABLES), by_models,
                       "the migrations", "the live models")


def test_schema_version_records_the_latest_version(new_database):
    url = migrated(new_database("migrated"))
    columns = {name for table, kind, name in describe_schema(url)
               if table == "schema_version" and kind == "column"}
    assert columns == {"id", "version", "applied_at"}
    models.configure_database(url)
    assert migrations.current_version() == migrations.LATEST
    models.database.close_all()


@pytest.mark.parametrize("record_version", [False, True], ids=["unversioned", "version-1"])
def test_database_upgraded_from_version_1_ends_like_a_fresh_one(new_database, record_version):
    upgraded_url = new_database("upgraded")
    build_version_1(upgraded_url, record_version)
    upgraded = describe_schema(migrated(upgraded_url))
    fresh = describe_schema(migrated(new_database("fresh")))

    assert_same_schema(upgraded, fresh, "upgrading from version 1", "a fresh migration")


IDEMPOTENCY_ROWS = [("user:1", "retry-1", "f" * 64, '{"chatId": "chat-1"}'),
                    ("agent:2", "retry-1", "e" * 64, None)]


def test_renaming_the_idempotency_indexes_keeps_the_keys_and_their_uniqueness(new_database):
    url = new_database("version_3")
    models.configure_database(url)
    migrations.upgrade(target=3)  # the last version with the old index names
    key = migrations.version_2.IdempotencyKey
    with models.database.bind_ctx([key]):
        for scope, name, fingerprint, response in IDEMPOTENCY_ROWS:
            key.create(scope=scope, key=name, fingerprint=fingerprint, response=response,
                       created_at=models.utcnow())
    models.database.close_all()

    migrated(url)

    models.configure_database(url)
    live = models.IdempotencyKey
    rows = live.select(live.scope, live.key, live.fingerprint, live.response).order_by(live.id)
    assert list(rows.tuples()) == IDEMPOTENCY_ROWS
    with pytest.raises(IntegrityError), models.database.atomic():
        live.create(scope="user:1", key="retry-1", fingerprint="0" * 64)
    models.database.close_all()
