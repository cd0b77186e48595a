"""`flask --app app users|agents|db ...`: provisioning and upkeep from a shell.

Commands neither migrate the schema nor start the server's background threads: `db upgrade`
alone changes the schema, and every other command that reads or writes data first checks that
the schema is the one this release needs.
"""
import contextlib
import csv
import functools
import itertools
import json
import re
import sys

import click
from flask import current_app
from flask.cli import AppGroup
from marshmallow import ValidationError
from peewee import DatabaseError, ImproperlyConfigured

import accounts
import dbcopy
import migrations
import models
from dbtrouble import describe_failure
from schemas import MAX_NAME_LENGTH, UserSchema


@contextlib.contextmanager
def database_errors_explained():
    """A database that cannot be used is one line saying why, not a traceback."""
    try:
        yield
    except DatabaseError as error:
        raise click.ClickException(
            f"cannot use the database ({models.describe_database()}): {error}") from None
    except ImproperlyConfigured as error:  # no PostgreSQL driver installed
        raise click.ClickException(
            f"cannot use the database ({models.describe_database()}): "
            f"{describe_failure(error)}") from None
    except migrations.SchemaTooNew as error:
        raise click.ClickException(str(error)) from None


def needs_current_schema(command):
    """Run `command` only on a database whose schema this release can use; otherwise say what
    to do, instead of a traceback."""

    @functools.wraps(command)
    def checked(*args, **kwargs):
        if models.sqlite_file_missing():
            raise click.ClickException(
                f"no database yet ({models.describe_database()}): create it with  "
                "flask --app app db upgrade  (or start the service)")
        with database_errors_explained():
            version = migrations.current_version()
        if version > migrations.LATEST:
            raise click.ClickException(str(migrations.SchemaTooNew(version)))
        if version != migrations.LATEST:
            raise click.ClickException(
                f"the database schema is at version {version} and this release needs "
                f"{migrations.LATEST}: run  flask --app app db upgrade  first")
        return command(*args, **kwargs)

    return checked


users = AppGroup("users", help="Add, import, remove and list the customers who may chat.")
user_schema = UserSchema()

LARGE_FILE_LINES = 1_000  # from this many lines on, import shows a progress bar
BATCH_SIZE = 500  # rows written per transaction during import


def describe_errors(error):
    """'field: message; field: message' from a ValidationError."""
    parts = []
    for field, messages in sorted(error.messages.items()):
        text = " ".join(messages) if isinstance(messages, list) else str(messages)
        parts.append(f"{field}: {text}")
    return "; ".join(parts)


@users.command("add")
@click.argument("email")
@click.argument("uuid")
@click.option("--name", default=None, help="The customer's display name.")
@needs_current_schema
def add_user(email, uuid, name):
    """Add a customer, or give an existing EMAIL a new UUID."""
    try:
        fields = user_schema.load({"email": email, "uuid": uuid, "name": name})
    except ValidationError as error:
        raise click.ClickException(describe_errors(error)) from None
    user, created = accounts.save_user(**fields)
    click.echo(f"{'added' if created else 'updated'} {user.email}")


@users.command("remove")
@click.argument("email")
@needs_current_schema
def remove_user(email):
    """Revoke a customer's access at once (their chats are kept for the agents)."""
    email = accounts.normalize_email(email)
    try:
        accounts.remove_user(email)
    except accounts.UserNotFound:
        raise click.ClickException(f"no active user has the email {email}") from None
    click.echo(f"removed {email}")


@users.command("list")
@needs_current_schema
def list_users():
    """List the customers who may chat (emails and names; never their uuids)."""
    count = 0
    for user in accounts.active_users():
        click.echo(f"{user.email}\t{user.name or ''}\t{user.created_at:%Y-%m-%d}")
        count += 1
    click.echo(f"{count} user(s)", err=True)


def is_json_lines(path, first_line):
    if path.lower().endswith((".jsonl", ".ndjson", ".json")):
        return True
    if path.lower().endswith(".csv"):
        return False
    return first_line.lstrip().startswith("{")


def json_rows(lines):
    """(line number, row dict or error text) for each non-blank line of JSON lines."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            yield number, "not valid JSON"
            continue
        yield number, row if isinstance(row, dict) else "not a JSON object"


def csv_rows(lines):
    """(line number, row dict or error text) for each data row of a CSV with a header."""
    reader = csv.DictReader(lines, restkey="_extra")
    header = reader.fieldnames or []
    if not {"email", "uuid"} <= set(header) <= {"email", "uuid", "name"}:
        raise click.ClickException("the CSV header must be email,uuid or email,uuid,name")
    for row in reader:
        if "_extra" in row:
            yield reader.line_num, "too many columns"
        elif None in row.values():
            yield reader.line_num, "too few columns"
        else:
            # ASCII whitespace only: `str.strip` would also drop an IDEOGRAPHIC SPACE from
            # an email, and with it the difference between a look-alike and the real one.
            row = {key: value.strip(accounts.ASCII_WHITESPACE) for key, value in row.items()}
            yield reader.line_num, {key: value for key, value in row.items()
                                    if key != "name" or value}


def validated(rows):
    """(line number, fields or error text): the schema's verdict on each row."""
    for number, row in rows:
        if isinstance(row, str):
            yield number, row
            continue
        try:
            yield number, user_schema.load(row)
        except ValidationError as error:
            yield number, describe_errors(error)


def count_lines(path):
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


@users.command("import")
@click.argument("path", metavar="FILE", type=click.Path(exists=True, dir_okay=False))
@needs_current_schema
def import_users(path):
    """Add or update customers from FILE: CSV (header email,uuid[,name]) or JSON lines.

    Every row is judged on its own: a rejected row is reported with its reason and never stops
    the others. Exits 1 when any row was rejected.
    """
    total_lines = count_lines(path)
    counts = {"added": 0, "updated": 0, "rejected": 0}
    rejections = []
    # surrogateescape: a byte that is not UTF-8 spoils only its own row (the schema refuses it).
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        first_line = handle.readline()
        handle.seek(0)
        rows = json_rows(handle) if is_json_lines(path, first_line) else csv_rows(handle)
        with click.progressbar(length=total_lines, label="Importing users", file=sys.stderr,
                               hidden=total_lines < LARGE_FILE_LINES) as progress:
            verdicts = validated(rows)
            while batch := list(itertools.islice(verdicts, BATCH_SIZE)):
                with models.write_transaction():
                    for number, fields in batch:
                        if isinstance(fields, str):
                            rejections.append((number, fields))
                            counts["rejected"] += 1
                            continue
                        _, created = accounts.save_user(**fields)
                        counts["added" if created else "updated"] += 1
                progress.update(batch[-1][0] - progress.pos)
    for number, reason in rejections:
        click.echo(f"line {number}: rejected: {reason}")
    click.echo(f"added {counts['added']}, updated {counts['updated']}, "
               f"rejected {counts['rejected']}")
    if counts["rejected"]:
        sys.exit(1)


# --- agents ------------------------------------------------------------------------------

agents = AppGroup("agents", help="Add, list and remove support agents and their tokens.")
AGENT_NAME = re.compile(r"\A[A-Za-z0-9._@-]{1,64}\Z")


@agents.command("add")
@click.argument("name")
@click.option("--display-name", default=None, help="The name customers see on replies.")
@needs_current_schema
def add_agent(name, display_name):
    """Add agent NAME and print its new token (shown this once, stored only as a digest)."""
    if not AGENT_NAME.match(name):
        raise click.ClickException("NAME must be 1 to 64 letters, digits or . _ @ -")
    if display_name is not None and not 0 < len(display_name) <= MAX_NAME_LENGTH:
        raise click.ClickException(f"--display-name must be 1 to {MAX_NAME_LENGTH} characters")
    try:
        agent, token = accounts.add_agent(name, display_name)
    except accounts.AgentExists:
        raise click.ClickException(f"an agent named {name} exists; remove it first") from None
    except accounts.ReservedAgentName:
        raise click.ClickException(f"NAME cannot be {name}: the chat lists' assignee filter "
                                   "uses it (assignee=me|none|any)") from None
    click.echo(f"added agent {agent.name}; its token (shown only now):", err=True)
    click.echo(token)
    public_url = current_app.config["PUBLIC_URL"]
    if public_url:
        # The token rides in the fragment, which browsers never send to a server or its logs.
        # (On stderr, like the line above: `TOKEN=$(flask agents add ann)` still gets the
        # token alone.)
        click.echo(f"sign-in link (as secret as the token): {public_url}/inbox#token={token}",
                   err=True)


@agents.command("list")
@needs_current_schema
def list_agents():
    """List the active agents (never their tokens)."""
    for agent in accounts.active_agents():
        click.echo(f"{agent.name}\t{agent.display_name or ''}\t{agent.created_at:%Y-%m-%d}")


@agents.command("remove")
@click.argument("name")
@needs_current_schema
def remove_agent(name):
    """Revoke agent NAME's token at once (its replies keep their author)."""
    if not accounts.remove_agent(name):
        raise click.ClickException(f"no active agent is named {name}")
    click.echo(f"removed agent {name}")


# --- the schema --------------------------------------------------------------------------

db = AppGroup("db", help="Database upkeep.")


@db.command("upgrade")
def upgrade_database():
    """Apply every pending schema migration (serving also does this at start)."""
    models.create_database_folder()
    with database_errors_explained():
        start, end = migrations.upgrade()
    if start == end:
        click.echo(f"schema already at version {end}")
    else:
        click.echo(f"schema upgraded from version {start} to {end}")


@db.command("copy")
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
