"""`python app.py`: the service on waitress, as production runs it.

Settings of the server itself are read here (HOST, PORT, WAITRESS_THREADS, TRUSTED_PROXY,
CONNECTION_LIMIT, CHANNEL_TIMEOUT, HEADER_TIMEOUT, REQUEST_TIMEOUT, SHUTDOWN_GRACE_SECONDS); the
app's own are in settings.py.

One setting sizes the server for waiting clients: LONGPOLL_MAX_WAITERS (N). Each waiting poll
holds a thread, so the server has N threads on top of WAITRESS_THREADS for requests, each with
a small stack (`THREAD_STACK_BYTES`); its connection limit leaves room for N waiting polls and
as many keep-alive connections beside the normal traffic; and the process may open that many
files. Its loop (server/eventloop.py) watches sockets with epoll and costs nothing for a connection
that does nothing.

A client must send each request within deadlines counted from the request's first byte (received
while no earlier request of its connection runs): the head (request line and headers) within
HEADER_TIMEOUT seconds (default 10), and the whole request, body included, within REQUEST_TIMEOUT
seconds (default 30; 1 to 3,600). A connection still sending one after that is closed: otherwise a
client dribbling a header line, a body byte or a blank line every few seconds would keep its
connection forever, since CHANNEL_TIMEOUT counts only silence.

On SIGTERM the server stops accepting connections, lets the requests in flight finish for up to
SHUTDOWN_GRACE_SECONDS, and exits 0 as soon as none is left.
"""
import contextlib
import errno
import logging
import os
import platform
import signal
import sqlite3
import sys
import threading
import time

import peewee

import models
from api import longpoll
from events import webhooks
from server import eventloop, waitress_internals
from server.lifecycle import start_serving
from settings import Invalid, integer, refuse
from storage import checkpoints, migrations
from storage.trouble import describe_failure

logger = logging.getLogger("supportzen.server")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

# A waiting poll's thread touches a few pages of its stack; the rest is address space only.
# 512 KiB leaves the JSON parser room to refuse a deeply nested body with its RecursionError
# (256 KiB was the least that did so when measured; Python 3.11 runs Python calls off the C
# stack).
THREAD_STACK_BYTES = 512 * 1024

# glibc's malloc keeps freed blocks in a cache per thread (tcache) and opens up to 8 arenas per
# core: with a thread per waiting poll, memory held for nothing. Without them, 2,000 waiting
# polls took 124 MB of RSS instead of 132 (bench/results.md); throughput is the same, since
# Python serves its small objects from its own allocator.
MALLOC_TUNING = "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=2"


def main(create_app):
    """Serve the app that `create_app()` builds (app.py passes its factory: the server runtime
    runs an app, and knows nothing of how one is put together)."""
    tune_malloc()
    app = create_app()  # (it sets up the log's format first)
    # Until the loop runs (and sets its own), SIGTERM stops start-up cleanly.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    waiters = app.config["LONGPOLL_MAX_WAITERS"]
    options = server_settings(os.environ, waiters, app.config["MAX_CONTENT_LENGTH"])
    allow_open_files(options, waiters, app.config["DB_POOL_SIZE"])
    threading.stack_size(THREAD_STACK_BYTES)
    try:
        # (No gc.freeze() of what start-up made: it looks cheaper, but the collector then
        # counts so few long-lived objects that it runs full collections far more often, each
        # walking every waiting poll's objects: send p99 tripled with 2,000 polls waiting.)
        start_with_database(app)
        server = listen(app, options)
        # Before the first request (the loop has not run): every event is the sender's.
        start_with_database(app, lambda app: webhooks.start_sending(app.config))
        serve_until_terminated(server, options["shutdown_grace"])
    except KeyboardInterrupt:
        logger.info("interrupted: stopped at once")
    finally:
        webhooks.stop_sending()  # the deliveries in flight are recorded, not cut off
        checkpoints.background_checkpoints.stop()


def tune_malloc():
    """Run this process again (the same pid and arguments) with MALLOC_TUNING, on glibc:
    glibc reads it only when a process starts. An operator's own GLIBC_TUNABLES, even empty,
    is left alone; so is a program read from standard input, which cannot be read twice."""
    if "GLIBC_TUNABLES" in os.environ or platform.libc_ver()[0] != "glibc" \
            or not sys.executable or sys.argv[0] in ("", "-"):
        return
    os.environ["GLIBC_TUNABLES"] = MALLOC_TUNING
    try:
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    except OSError:  # carry on untuned
        del os.environ["GLIBC_TUNABLES"]


# What stops start-up because of the database rather than a bug: the driver's errors, the
# file system's (a folder that cannot be made), a schema from a later release.
DATABASE_FAILURES = (peewee.PeeweeException, sqlite3.Error, OSError, migrations.SchemaTooNew)


def start_with_database(app, start=lambda app: start_serving(app, send_webhooks=False)):
    """`start_serving` (or `start`); a database it cannot use stops the service with one line
    saying which and why, exit status 1, no traceback."""
    try:
        start(app)
    except DATABASE_FAILURES as error:
        print(f"error: cannot use the database ({models.describe_database()}): "
              f"{describe_failure(error)}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def listen(app, options):
    """The server, listening, and a line in the log saying where; an address or port it
    cannot listen on stops the service like any bad setting."""
    host, port = options["waitress"]["host"], options["waitress"]["port"]
    try:
        server = waitress_internals.create_server(
            app, options["header_timeout"], options["request_timeout"],
            options["request_threads"], **options["waitress"])
    except ValueError:  # waitress found no such address
        refuse("HOST", f"{host!r} is not an address to listen on")
    except RuntimeError as error:  # the system refused a thread of the pool
        refuse("WAITRESS_THREADS",
               f"cannot start {options['request_threads']} threads ({error}): allow more "
               f"threads (TasksMax= in a systemd unit, ulimit -u, ulimit -v)")
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


def default_connection_limit(request_threads, longpoll_waiters):
    """Room for each waiting client twice (its waiting poll and the keep-alive connection it
    sends on), and for the normal traffic: running requests, idle keep-alive connections and
    slow clients, which the timeouts below keep short-lived."""
    return 2 * longpoll_waiters + max(500, 8 * request_threads)


def server_settings(environ, longpoll_waiters, max_body=64 * 1024):
    request_threads = read(environ, "WAITRESS_THREADS", 16, integer(1, 10_000))
    connection_limit = read(environ, "CONNECTION_LIMIT", None,
                            integer(request_threads + longpoll_waiters + 1, 1_000_000))
    waitress = {
        # Plain HTTP carries bearer tokens that never expire: only this machine (nginx) by
        # default; HOST=0.0.0.0 in a container or without a proxy.
        "host": environ.get("HOST", "").strip() or "127.0.0.1",
        "port": read(environ, "PORT", 8080, integer(0, 65535)),
        # A thread for each poll that may wait, beside those that serve requests.
        "threads": request_threads + longpoll_waiters,
        # waitress stops accepting anyone at this many open connections (its default, 100, a
        # hundred idle sockets reach).
        "connection_limit": connection_limit
        or default_connection_limit(request_threads, longpoll_waiters),
        # Idle connections close after this long without a byte either way. waitress never
        # times out a connection while it has a request queued or running (server.py
        # `maintenance` skips a channel whose `requests` is not empty, and channel.py's
        # `service` pops the request only once it is answered), so a long-poll of up to 25 s
        # needs no longer timeout than this.
        "channel_timeout": read(environ, "CHANNEL_TIMEOUT", 30, integer(1, 24 * 3600)),
        "cleanup_interval": 1,  # how often waitress looks for idle connections (default 30 s)
        "asyncore_use_poll": True,  # read by waitress's own loop only; ours uses epoll
        # Connections that arrive together (clients coming back after a restart) wait in the
        # kernel's queue, not in SYN retries.
        "backlog": 4096,
        # Backstops: the app answers 431 in JSON from MAX_HEADER_BYTES on, and 413 in JSON
        # from MAX_CONTENT_LENGTH on; far past those waitress stops reading (its own default
        # takes a gigabyte of body, to a temporary file, before the app can say no).
        "max_request_header_size": 64 * 1024,
        "max_request_body_size": max_body + 64 * 1024,
        # Bodies up to the backstop stay in memory: a body in a temporary file holds a
        # second open file per connection, which the open-file sizing does not count.
        "inbuf_overflow": max(512 * 1024, max_body + 64 * 1024 + 1),
    }
    if environ.get("TRUSTED_PROXY"):
        # Take the client address from X-Forwarded-For, but only from this proxy.
        waitress.update(trusted_proxy=environ["TRUSTED_PROXY"],
                        trusted_proxy_headers={"x-forwarded-for"}, trusted_proxy_count=1,
                        clear_untrusted_proxy_headers=True)
    return {"waitress": waitress,
            "request_threads": request_threads,
            "connection_limit_set": connection_limit is not None,
            "header_timeout": read(environ, "HEADER_TIMEOUT", 10, integer(1, 3600)),
            "request_timeout": read(environ, "REQUEST_TIMEOUT", 30, integer(1, 3600)),
            "shutdown_grace": read(environ, "SHUTDOWN_GRACE_SECONDS", 10, integer(0, 3600))}


def files_besides_connections(pool_size):
    """The log, the listeners, the triggers, the watcher, and the database connections (a
    SQLite connection in WAL mode holds three files)."""
    return 64 + 3 * pool_size


def allow_open_files(options, longpoll_waiters, pool_size):
    """Each connection is an open file: raise the process's soft limit (often 1,024) as far as
    the hard limit allows. Stop with one line when even the waiting polls cannot fit; when only
    the default connection limit cannot, lower it to what fits and say so."""
    try:
        import resource
    except ImportError:  # not on Unix
        return
    waitress = options["waitress"]
    besides = files_besides_connections(pool_size)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        # macOS says so, and refuses a soft limit of "infinity": ask for what is needed.
        wanted = waitress["connection_limit"] + besides
        if soft != resource.RLIM_INFINITY and soft < wanted:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        return
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    room = hard - besides
    least = waitress["threads"] + longpoll_waiters + 1  # every thread busy, N polls waiting
    if room < least:
        refuse("LONGPOLL_MAX_WAITERS",
               f"{longpoll_waiters} waiting polls and {waitress['threads'] - longpoll_waiters} "
               f"request threads need at least {least + besides} open files, "
               f"and this process may open at most {hard} (ulimit -Hn): lower it, or raise "
               f"the limit (LimitNOFILE= in a systemd unit)")
    limit = waitress["connection_limit"]
    if limit > room:
        if options["connection_limit_set"]:
            refuse("CONNECTION_LIMIT",
                   f"{limit} connections need {limit + besides} open files, "
                   f"and this process may open at most {hard} (ulimit -Hn)")
        logger.warning("the open-file limit (%d, ulimit -Hn) allows %d connections, not the "
                       "%d that LONGPOLL_MAX_WAITERS=%d asks for: limited to %d", hard, room,
                       limit, longpoll_waiters, room)
        waitress["connection_limit"] = room


def serve_until_terminated(server, grace):
    """The loop (server/eventloop.py), until SIGTERM; then `drain`. The signal handler only sets a
    flag (it runs in the loop's thread, between any two lines), and a thread wakes the loop."""
    sockets = server.socket_map
    loop = eventloop.EventLoop(sockets, waitress_internals.listeners(sockets))
    terminated = threading.Event()
    # (Its trigger outlives the listener.)
    wake_loop = waitress_internals.listeners(sockets)[0].pull_trigger

    def on_sigterm(signum, frame):
        terminated.set()
        threading.Thread(target=wake_loop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        while not terminated.is_set():
            loop.run_once(server.adj.asyncore_loop_timeout)
        drain(server, grace, loop)
    finally:
        server.task_dispatcher.shutdown(timeout=1)
        waitress_internals.close_all(sockets)
        loop.close()


def accept_backlog(listener, sockets, connection_limit):
    while len(sockets) < connection_limit:
        before = len(sockets)
        listener.handle_accept()
        if len(sockets) == before:  # nothing more waiting (or accept failed)
            return


def in_flight(connections, loop):
    """Those of `connections` still open with a request in flight."""
    return {c for c in connections if loop.is_open(c) and c.in_flight()}


def drain(server, grace, loop):
    """Stop accepting (new connections are refused from here on), close idle connections, and
    keep serving those with a request in flight until they are done or `grace` runs out."""
    sockets = server.socket_map
    deadline = time.monotonic() + grace
    listeners = waitress_internals.listeners(sockets)
    for listener in listeners:
        # Clients that connected and sent before the signal wait in the backlog: take them in
        # (they are in flight), and only then refuse new ones.
        accept_backlog(listener, sockets, server.adj.connection_limit)
        # Not `listener.close()`: that also closes its trigger, which the threads still pull.
        waitress_internals.close_listener(listener)
    # Read what has already come in, so that a request sent just before the signal is not
    # taken for an idle connection.
    loop.sweep()
    loop.run_once(0)
    for listener in listeners:
        listener.draining = True
    loop.sweep()  # every idle connection learns it is to close
    # From here on no connection starts a request: the set only shrinks.
    busy = in_flight(waitress_internals.connections(sockets), loop)
    logger.info("SIGTERM: no new connections; waiting up to %g s for %d request(s) in flight",
                grace, len(busy))
    longpoll.stop_waiting()  # waiting long-polls answer at once with what they have
    swept = time.monotonic()
    while busy and time.monotonic() < deadline:
        if time.monotonic() - swept >= 1:  # the listeners' maintenance no longer runs
            loop.sweep()  # slow clients' deadlines, idle connections
            swept = time.monotonic()
            busy = in_flight(busy, loop)
        # Only those the turn asked again can be done: asking every connection on each turn
        # (a turn for each answer) kept the GIL from the threads answering.
        asked = loop.run_once(min(1.0, deadline - time.monotonic())) & busy
        busy -= asked - in_flight(asked, loop)
    if busy:
        logger.warning("stopping with %d request(s) still in flight after %g s",
                       len(busy), grace)
    else:
        logger.info("every request in flight is answered: stopping")
