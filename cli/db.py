"""`flask --app app db ...`: the schema's upgrades, and copying the database into another."""
import click
from flask.cli import AppGroup

import models
from cli.common import database_errors_explained, needs_current_schema
from storage import copy as dbcopy
from storage import migrations

group = AppGroup("db", help="Database upkeep.")


@group.command("upgrade")
def upgrade_database():
    """Apply every pending schema migration (serving also does this at start)."""
    models.create_database_folder()
    with database_errors_explained():
        start, end = migrations.upgrade()
    if start == end:
        click.echo(f"schema already at version {end}")
    else:
        click.echo(f"schema upgraded from version {start} to {end}")


@group.command("copy")
@needs_current_schema
@click.option("--to", "target_url", required=True, metavar="URL",
              help="The database to copy into, e.g. postgresql://user:pass@host:5432/db")
def copy_database(target_url):
    """Copy this database (DATABASE_URL) into an empty one, then check the row counts.

    Stop the service first, so that nothing is written while the copy runs.
    """
    try:
        counts = dbcopy.copy_database(
            target_url, on_batch=lambda model, count: click.echo(
                f"  {model._meta.table_name}: +{count}", err=True))
    except dbcopy.TargetNotEmpty:
        raise click.ClickException("the target database already holds data") from None
    mismatched = False
    for table, (in_source, in_target) in counts.items():
        verdict = "ok" if in_source == in_target else "MISMATCH"
        mismatched |= in_source != in_target
        click.echo(f"{table}: {in_source} -> {in_target} {verdict}")
    if mismatched:
        raise click.ClickException("row counts differ: do not switch to the copy")
    click.echo("copy verified: every table has the same number of rows")
