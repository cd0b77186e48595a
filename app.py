"""SupportZen live chat: the application factory and the production entry point.

    python app.py                          # waitress on HOST:PORT (server/serve.py)
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
import time

from flask import Flask
from flask_cors import CORS

import models
import settings
from api import longpoll, ratelimits
from api.envelope import success
from api.errors import ONE_LINE_PER_RECORD, logged_path, printable, register_error_handlers
from api.ratelimits import setup_limits
from server import lane
from server.lifecycle import start_serving_before_first_request
from storage.changes import changes

INBOX_FILES = os.path.join("inbox", "static")
INSTANCE_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "instance")
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
    # (Looked up at each wait: tests watch the lane's `paused`.)
    app.extensions["waiter_slots"] = longpoll.waiter_slots(
        app.config, step_out=lambda: lane.request_lane.paused())

    @app.teardown_request
    def return_connection(exc):
        # Connections open lazily on the first query (peewee's autoconnect), so a 404, a
        # preflight or a rejected body never touches the database; this hands the
        # connection back to the pool even when the request raised.
        if not models.database.is_closed():
            models.database.close()


def register_blueprints(app):
    import inbox
    from api import admin, agent, customer, openapi

    for views in (customer, openapi, agent, admin, inbox):
        app.register_blueprint(views.bp)
    inbox.protect_page_and_files(app)


def register_commands(app):
    from cli import agents, db, users, webhooks

    for commands in (users, agents, db, webhooks):
        app.cli.add_command(commands.group)


def create_app(config=None):
    configure_logging()  # before `app.logger`, so Flask adds no handler of its own
    # The inbox's script and style sheet, at /static as before (inbox/static).
    # The instance folder (the default SQLite file) beside app.py, whatever the current
    # directory: `python app.py` runs as __main__, for which Flask would take the current one.
    app = Flask(__name__, static_folder=INBOX_FILES, instance_path=INSTANCE_FOLDER)
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


if __name__ == "__main__":
    from server import serve

    serve.main(create_app)
