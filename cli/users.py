"""`flask --app app users ...`: the customers who may chat, added one by one or imported
from a file."""
import csv
import itertools
import json
import sys

import click
from flask.cli import AppGroup
from marshmallow import ValidationError

import models
from chat import accounts
from cli.common import needs_current_schema
from schemas import UserSchema

group = AppGroup("users", help="Add, import, remove and list the customers who may chat.")
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


@group.command("add")
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


@group.command("remove")
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


@group.command("list")
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


@group.command("import")
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
