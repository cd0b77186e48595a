"""SupportZen live chat: the application factory and the production entry point.

    python app.py                          # waitress on HOST:PORT (serve.py)
    waitress-serve --call app:create_app   # waitress's own launcher (docs/operations.md: flags)
    flask --app app run                    # development server

Every launcher gets the same log format and the access log (`configure_logging`,
`log_requests`).

`create_app` only builds the app: it opens no database connection, so every CLI command (and
its --help) works with the database unreachable. Serving needs more, done by `start_serving`
once before the first request (and at once by `python app.py`): pending schema migrations, the
background threads, the start-up log.
"""
import logging
import os
import threading
import time

from flask import Flask, request
from flask_cors import CORS

import accounts
import checkpoints
import lane
import longpoll
import migrations
import models
import ratelimits
import settings
import webhooks
from changes import changes
from dbtrouble import database_trouble, describe_failure
from envelope import success
from errors import ONE_LINE_PER_RECORD, logged_path, printable, register_error_handlers
from ratelimits import setup_limits

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

access_log = logging.getLogger("supportzen.access")


def configure_logging():
    """One format (time, level, logger, message) for the service's lines, waitress's and the
    access log, whichever launcher runs the app. Logging someone already set up (pytest, another
    server) is left alone."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    # LOG_FORMAT names no thread; asking each record for its thread's name would give every
    # bare pool thread (lane.BareThreads) a `threading.Thread` object of its own.
    logging.logThreads = False
    # Every line through it, waitress's own ("Client disconnected while serving <path>")
    # included, has a request's control characters escaped.
    handler.addFilter(ONE_LINE_PER_RECORD)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # `flask run`'s server logs each request itself, query string included: the access log
    # below is the one line per request.
    logging.getLogger("werkzeug").addFilter(
        lambda record: not str(record.msg).endswith('] "%s" %s %s'))


def field(text):
    """`text` as one field of an access-log line: control characters escaped (a path's %0A
    forges no line), spaces too (they separate the fields)."""
    return printable(text).replace(" ", "\\x20")


def log_requests(app):
    """One access-log line per request, on any launcher: client address, method, path (never
    the query string), status, milliseconds until the answer was sent, body bytes. Nothing
    else of the request (no header, so no token; no body) ever goes in it."""
    handle = app.wsgi_app

    def wsgi_app(environ, start_response):
        started = time.monotonic()
        status = []

        def start(status_line, headers, exc_info=None):
            status[:] = [status_line.split(" ", 1)[0]]
            return start_response(status_line, headers, exc_info)

        def log(sent):
            # WSGI gives the path's bytes as Latin-1; shown as UTF-8, as Flask reads it.
            path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode(
                "latin-1", "replace").decode("utf-8", "backslashreplace")
            access_log.info("%s %s %s %s %.1fms %dB", field(environ.get("REMOTE_ADDR") or "-"),
                            field(environ.get("REQUEST_METHOD") or "-"),
                            field(logged_path(path)),
                            status[0] if status else "500",
                            (time.monotonic() - started) * 1000, sent)

        try:
            body = handle(environ, start)
        except Exception:
            log(0)
            raise
        return CountedBody(body, log)

    app.wsgi_app = wsgi_app


class CountedBody:
    """A response body that counts its bytes as the server sends them and calls `done(bytes)`
    when the server closes it: after the last byte, or once the client has gone."""

    def __init__(self, body, done):
        self.body, self.done, self.sent = body, done, 0

    def __iter__(self):
        for chunk in self.body:
            self.sent += len(chunk)
            yield chunk

    def close(self):
        try:
            if hasattr(self.body, "close"):
                self.body.close()
        finally:
            self.done(self.sent)


def default_database_url(app):
    """A SQLite file in the instance folder (made when the schema is first created)."""
    return "sqlite:///" + os.path.join(app.instance_path, "supportzen.db")


def run_in_request_lane(app):
    """Each request runs in `lane.request_lane` (one at a time on SQLite; see there). The
    response body is sent after the lane is left."""
    handle = app.wsgi_app

    def wsgi_app(environ, start_response):
        with lane.request_lane.held():
            return handle(environ, start_response)

    app.wsgi_app = wsgi_app


def setup_cors(app):
    """Let browser apps on the listed origins call the customer API; no origin by default."""
    origins = [origin.strip() for origin in app.config["CORS_ORIGINS"].split(",")
               if origin.strip()]
    if origins:
        CORS(app, resources={r"/api/client/*": {"origins": origins}},
             allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
             methods=["POST", "OPTIONS"], max_age=600)


def setup_database(app):
    """Point the models at the database (no connection opens until a query needs one)."""
    synchronous = app.config["SQLITE_SYNCHRONOUS"].upper()
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError("SQLITE_SYNCHRONOUS must be NORMAL or FULL")
    url = app.config["DATABASE_URL"] or default_database_url(app)
    models.configure_database(url, synchronous, app.config["DB_POOL_SIZE"])
    # Long-polls hold a waitress thread each: at most this many wait at once.
    app.extensions["waiter_slots"] = longpoll.waiter_slots(app.config)

    @app.teardown_request
    def return_connection(exc):
        # Connections open lazily on the first query (peewee's autoconnect), so a 404, a
        # preflight or a rejected body never touches the database; this hands the
        # connection back to the pool even when the request raised.
        if not models.database.is_closed():
            models.database.close()


def register_blueprints(app):
    import admin_api
    import agent_api
    import customer_api
    import inbox
    import openapi

    app.register_blueprint(customer_api.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(agent_api.bp)
    app.register_blueprint(admin_api.bp)
    app.register_blueprint(inbox.bp)
    inbox.protect_page_and_files(app)


def register_commands(app):
    import cli
    import webhooks_cli

    app.cli.add_command(cli.users)
    app.cli.add_command(cli.agents)
    app.cli.add_command(cli.db)
    app.cli.add_command(webhooks_cli.webhook_commands)


def create_app(config=None):
    configure_logging()  # before `app.logger`, so Flask adds no handler of its own
    app = Flask(__name__)
    app.json.sort_keys = False  # keep the envelope in the spec's order
    if app.logger.level == logging.NOTSET:
        app.logger.setLevel(logging.INFO)
    app.config.update(settings.load(config))
    # werkzeug answers a doubled slash ("/api/client/live//chat") with a 308 to the merged
    # path: an HTML page, its URL built from the Host header with http:// (a downgrade behind
    # TLS). A path that is not a route is a JSON 404 like any other.
    app.url_map.merge_slashes = False

    register_error_handlers(app)
    setup_database(app)
    run_in_request_lane(app)
    if app.config["ACCESS_LOG"]:
        log_requests(app)  # outermost: the time includes waiting for the lane
    start_serving_before_first_request(app)
    setup_cors(app)
    setup_limits(app)
    register_blueprints(app)
    register_commands(app)

    @app.get("/healthz")
    def healthz():
        models.database_health()
        slots = app.extensions["waiter_slots"]
        return success("ok", {"database": "ok", "rate_limits": ratelimits.storage_status(),
                              "long_polls": {"waiting": changes.waiting(),
                                             "capacity": slots.capacity,
                                             "woken": changes.woken}})

    return app


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


if __name__ == "__main__":
    import serve

    serve.main()
