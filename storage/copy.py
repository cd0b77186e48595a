"""Copying a whole database into another (SQLite to PostgreSQL, say): `flask db copy`."""
import models
from storage import migrations

COPY_ORDER = [models.User, models.Agent, models.Chat, models.Message, models.Note,
              models.SavedReply, models.IdempotencyKey,
              models.Event, models.WebhookEndpoint, models.WebhookDelivery]
COPY_BATCH = 1000


class TargetNotEmpty(Exception):
    """The database to copy into already holds data."""


def open_database(url, sqlite_synchronous="NORMAL", pool_size=4):
    """A second database (for `db copy`), configured as `configure_database` would; the models
    stay on the first."""
    current = models.database.obj
    try:
        return models.configure_database(url, sqlite_synchronous, pool_size,
                                         close_current=False)
    finally:
        models.database.initialize(current)


def reset_sequences(db, copied_models):
    """After rows were copied in with their ids, make the next ids follow them. SQLite takes
    max(id) + 1 by itself; PostgreSQL's sequences must be told."""
    if db.__class__.__name__.endswith("SqliteDatabase"):
        return
    for model in copied_models:
        table = model._meta.table_name
        db.execute_sql(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), "
                       f"COALESCE((SELECT MAX(id) FROM \"{table}\"), 0) + 1, false)")


def copy_database(target_url, on_batch=lambda model, count: None):
    """Copy every row of the current database into `target_url`, ids and all.

    The target gets the latest schema first and must hold no data. Returns {table: (rows in
    the source, rows in the target)} so the caller can check the two agree.
    """
    source = models.database.obj
    target = open_database(target_url)
    try:
        models.database.initialize(target)
        try:
            migrations.upgrade()
            if any(model.select().exists() for model in COPY_ORDER):
                raise TargetNotEmpty(models.describe_database())
        finally:
            models.database.initialize(source)
        for model in COPY_ORDER:
            copy_table(model, target, on_batch)
        reset_sequences(target, [model for model in COPY_ORDER
                                        if model is not models.Event])
        copy_event_counter(target)
        return {model._meta.table_name: count_both(model, target) for model in COPY_ORDER}
    finally:
        target.close_all()


def copy_table(model, target, on_batch):
    last_id = 0
    while rows := list(model.select().where(model.id > last_id).order_by(model.id)
                       .limit(COPY_BATCH).dicts()):
        with target.bind_ctx([model], bind_refs=False, bind_backrefs=False), target.atomic():
            model.insert_many(rows).execute()
        last_id = rows[-1]["id"]
        on_batch(model, len(rows))


def copy_event_counter(target):
    """The copy's next event id follows the source's (the counter row exists on both)."""
    last_id = models.EventCounter.get_by_id(1).last_id
    with target.bind_ctx([models.EventCounter]), target.atomic():
        models.EventCounter.update(last_id=last_id).where(models.EventCounter.id == 1).execute()


def count_both(model, target):
    in_source = model.select().count()
    with target.bind_ctx([model], bind_refs=False, bind_backrefs=False):
        return in_source, model.select().count()
