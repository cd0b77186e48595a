"""Serving's start, whatever the launcher: the schema brought up to date, the background
threads started, the start-up log; once per app, before its first request (or at once, by
`python app.py`). CLI commands never start serving."""
import logging
import threading

from flask import request

import models
from chat import accounts
from events import webhooks
from storage import checkpoints, migrations
from storage.trouble import database_trouble, describe_failure

# Requests that need no database, answered even while start-up cannot reach it.
NO_DATABASE_ENDPOINTS = {"openapi.openapi_document", "inbox.inbox_page", "inbox.front_page",
                         "inbox.doc_file", "static"}


def start_serving_before_first_request(app):
    """Serving through any launcher (waitress-serve, flask run, a test client) starts with
    `start_serving`; CLI commands, which serve no request, never do.

    Should start-up fail (the database unreachable, say), the request answers 503 and the next
    one tries again.
    """
    app.extensions["serving"] = {"started": False, "lock": threading.Lock()}

    @app.before_request
    def start_if_needed():
        if app.extensions["serving"]["started"] or request.url_rule is None \
                or request.endpoint in NO_DATABASE_ENDPOINTS:
            return
        try:
            start_serving(app)
        except Exception as error:
            # Once a minute, not on every request while the database is down.
            database_trouble.log.once_a_minute(
                app.logger, logging.ERROR,
                f"start-up failed; the next request tries again: {describe_failure(error)}")
            raise


def start_serving(app, send_webhooks=True):
    """Bring the schema to the latest version, start the background threads and log where the
    data lives; once per app, whoever calls first. (`python app.py` starts the webhook sender
    itself, once it listens: a server that cannot get its port sends nothing.)"""
    state = app.extensions["serving"]
    with state["lock"]:
        if state["started"]:
            return
        models.create_database_folder()
        warn_if_database_file_is_open(app)
        start, end = migrations.upgrade()
        if start != end:
            app.logger.info("database schema upgraded from version %s to %s", start, end)
        checkpoints.background_checkpoints.start()
        if send_webhooks:
            webhooks.start_sending(app.config)
        app.logger.info("database: %s", models.describe_database())
        if not accounts.has_active_users():
            app.logger.warning(
                "no user yet: add one with  .venv/bin/flask --app app users add EMAIL UUID")
        models.database.close()
        state["started"] = True


def warn_if_database_file_is_open(app):
    """An existing SQLite file keeps the mode its operator gave it (and SQLite gives its -wal
    and -shm files the same): say so at start when others than this user may read it."""
    mode = models.sqlite_file_mode_too_open()
    if mode is not None:
        app.logger.warning(
            "the SQLite file %s has mode %04o: users other than this one may read it, and it "
            "holds the uuids that sign requests: chmod 600 it (its -wal and -shm files follow "
            "its mode)", models.sqlite_path(), mode)
