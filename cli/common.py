"""What every command shares: a database that cannot be used is one line, not a traceback,
and a command runs only on the schema this release needs."""
import contextlib
import functools

import click
from peewee import DatabaseError, ImproperlyConfigured

import models
from storage import migrations
from storage.trouble import describe_failure


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
