"""`python app.py`: the service on waitress, as production runs it.

Settings of the server itself are read here (HOST, PORT, WAITRESS_THREADS, TRUSTED_PROXY,
CONNECTION_LIMIT, CHANNEL_TIMEOUT, HEADER_TIMEOUT, REQUEST_TIMEOUT, SHUTDOWN_GRACE_SECONDS); the
app's own are in settings.py.

A client must send each request within deadlines counted from the request's first byte (received
while no earlier request of its connection runs): the head (request line and headers) within
HEADER_TIMEOUT seconds (default 10), and the whole request, body included, within REQUEST_TIMEOUT
seconds (default 30; 1 to 3,600). A connection still sending one after that is closed: otherwise a
client dribbling a header line, a body byte or a blank line every few seconds would keep its
connection forever, since CHANNEL_TIMEOUT counts only silence.

On SIGTERM the server stops accepting connections, lets the requests in flight finish for up to
SHUTDOWN_GRACE_SECONDS, and exits 0.
"""
import errno
import logging
import os
import signal
import sqlite3
import sys
import threading
import time

import peewee
from waitress import wasyncore

import lane
import longpoll
import migrations
import models
from app import configure_logging, create_app, start_serving
from dbtrouble import describe_failure
from settings import Invalid, integer, refuse

logger = logging.getLogger("supportzen.server")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def main():
    configure_logging()
    app = create_app()
    options = server_settings(os.environ, app.config["LONGPOLL_MAX_WAITERS"])
    allow_open_files(options["waitress"]["connection_limit"])
    try:
        start_with_database(app)
        server = listen(app, options)
        serve_until_terminated(server, options["shutdown_grace"])
    except KeyboardInterrupt:
        logger.info("interrupted: stopped at once")
    finally:
        models.background_checkpoints.stop()


# What stops start-up because of the database rather than a bug: the driver's errors, the
# file system's (a folder that cannot be made), a schema from a later release.
DATABASE_FAILURES = (peewee.PeeweeException, sqlite3.Error, OSError, migrations.SchemaTooNew)


def start_with_database(app):
    """`start_serving`; a database it cannot use stops the service with one line saying which
    and why, exit status 1, no traceback."""
    try:
        start_serving(app)
    except DATABASE_FAILURES as error:
        print(f"error: cannot use the database ({models.describe_database()}): "
              f"{describe_failure(error)}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def listen(app, options):
    """The server, listening, and a line in the log saying where; an address or port it
    cannot listen on stops the service like any bad setting."""
    host, port = options["waitress"]["host"], options["waitress"]["port"]
    try:
        server = lane.create_server(app, options["header_timeout"], options["request_timeout"],
                                    **options["waitress"])
    except ValueError:  # waitress found no such address
        refuse("HOST", f"{host!r} is not an address to listen on")
    except OSError as error:
        name = "HOST" if error.errno == errno.EADDRNOTAVAIL else "PORT"
        refuse(name, f"cannot listen on {host} port {port}: {error.strerror}")
    server.print_listen("Serving on http://{}:{}")
    if host in LOOPBACK_HOSTS:
        logger.info("only this machine can connect: set HOST=0.0.0.0 to listen on every "
                    "interface (in a container, or without a reverse proxy)")
    return server


def read(environ, name, default, rule):
    """The setting `name` from the environment (empty counts as unset) by settings.py's
    `rule`; a bad value stops the service as any bad setting does."""
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        return rule(text)
    except Invalid as error:
        refuse(name, str(error))


def default_connection_limit(threads, longpoll_waiters):
    """Every waiting poll and every running request holds a connection; the rest is room for
    idle keep-alive connections and slow clients, which the timeouts below keep short-lived."""
    return max(500, 8 * (threads + longpoll_waiters))


def server_settings(environ, longpoll_waiters):
    threads = read(environ, "WAITRESS_THREADS", 16, integer(1, 10_000))
    waitress = {
        # Plain HTTP carries bearer tokens that never expire: only this machine (nginx) by
        # default; HOST=0.0.0.0 in a container or without a proxy.
        "host": environ.get("HOST", "").strip() or "127.0.0.1",
        "port": read(environ, "PORT", 8080, integer(0, 65535)),
        "threads": threads,
        # waitress stops accepting anyone at this many open connections (its default, 100, a
        # hundred idle sockets reach).
        "connection_limit": read(environ, "CONNECTION_LIMIT",
                                 default_connection_limit(threads, longpoll_waiters),
                                 integer(threads + longpoll_waiters + 1, 1_000_000)),
        # Idle connections close after this long without a byte either way. waitress never
        # times out a connection while it has a request queued or running (server.py
        # `maintenance` skips a channel whose `requests` is not empty, and channel.py's
        # `service` pops the request only once it is answered), so a long-poll of up to 25 s
        # needs no longer timeout than this.
        "channel_timeout": read(environ, "CHANNEL_TIMEOUT", 30, integer(1, 24 * 3600)),
        "cleanup_interval": 1,  # how often waitress looks for idle connections (default 30 s)
        "asyncore_use_poll": True,  # poll(), not select(): no limit of 1,024 sockets
        # A backstop: the app answers 431 in JSON from MAX_HEADER_BYTES on.
        "max_request_header_size": 64 * 1024,
    }
    if environ.get("TRUSTED_PROXY"):
        # Take the client address from X-Forwarded-For, but only from this proxy.
        waitress.update(trusted_proxy=environ["TRUSTED_PROXY"],
                        trusted_proxy_headers={"x-forwarded-for"}, trusted_proxy_count=1,
                        clear_untrusted_proxy_headers=True)
    return {"waitress": waitress,
            "header_timeout": read(environ, "HEADER_TIMEOUT", 10, integer(1, 3600)),
            "request_timeout": read(environ, "REQUEST_TIMEOUT", 30, integer(1, 3600)),
            "shutdown_grace": read(environ, "SHUTDOWN_GRACE_SECONDS", 10, integer(0, 3600))}


def allow_open_files(connection_limit):
    """Each connection is an open file: raise the process's soft limit (often 1,024) as far
    as the connection limit needs, when the hard limit allows it. Without it, accept() would
    fail over and over at the limit instead of waitress pausing cleanly."""
    try:
        import resource
    except ImportError:  # not on Unix
        return
    needed = connection_limit + 128  # the database, the log, the listeners, the triggers
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        refuse("CONNECTION_LIMIT", f"{connection_limit} connections need {needed} open files, "
                                   f"and this process may open at most {hard} (ulimit -n)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def serve_until_terminated(server, grace):
    """waitress's loop, until SIGTERM; then `drain`. The signal handler only sets a flag (it
    runs in the loop's thread, between any two lines), and a thread wakes the loop."""
    sockets = server.socket_map
    terminated = threading.Event()
    wake_loop = lane.listeners(sockets)[0].pull_trigger  # its trigger outlives the listener

    def on_sigterm(signum, frame):
        terminated.set()
        threading.Thread(target=wake_loop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        while not terminated.is_set():
            wasyncore.loop(server.adj.asyncore_loop_timeout, True, sockets, count=1)
        drain(server, grace)
    finally:
        server.task_dispatcher.shutdown(timeout=1)
        wasyncore.close_all(sockets)


def drain(server, grace):
    """Stop accepting (new connections are refused from here on), close idle connections, and
    keep serving those with a request in flight until they are done or `grace` runs out."""
    sockets = server.socket_map
    deadline = time.monotonic() + grace
    listeners = lane.listeners(sockets)
    for listener in listeners:
        # Not `listener.close()`: that also closes its trigger, which the threads still pull.
        wasyncore.dispatcher.close(listener)
    # Read what has already come in, so that a request sent just before the signal is not
    # taken for an idle connection.
    wasyncore.loop(0, True, sockets, count=1)
    for listener in listeners:
        listener.draining = True
    busy = [c for c in lane.connections(sockets) if c.in_flight()]
    logger.info("SIGTERM: no new connections; waiting up to %g s for %d request(s) in flight",
                grace, len(busy))
    longpoll.stop_waiting()  # waiting long-polls answer at once with what they have
    while busy and time.monotonic() < deadline:
        wasyncore.loop(min(1.0, deadline - time.monotonic()), True, sockets, count=1)
        busy = [c for c in lane.connections(sockets) if c.in_flight()]
    if busy:
        logger.warning("stopping with %d request(s) still in flight after %g s",
                       len(busy), grace)
    else:
        logger.info("every request in flight is answered: stopping")
