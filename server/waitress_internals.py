"""Every piece of waitress's internals the server uses, in this one module: nothing else imports
them. Each override below names the upstream file and function it copies or builds on, as of
the release it was checked against (`VERIFIED_WAITRESS`, which requirements.txt pins exactly;
tests/server/test_lane.py fails on any other release and checks each name in
`PRIVATE_NAMES`).

- `LaneDispatcher`: waitress's thread pool (waitress/task.py `ThreadedTaskDispatcher`), its
  `handler_thread` copied so that a thread takes a task only in the request lane;
- `Connection`: waitress's connection (waitress/channel.py `HTTPChannel`), with deadlines for
  slow clients, the drain, and a bounded wait for a client that stops reading;
- `create_server`, `listeners`, `connections`: waitress/server.py `create_server` given our
  dispatcher and connections, and what its socket map holds;
- `dispatch`: waitress/wasyncore.py `readwrite`, for our event loop (server/eventloop.py);
- `close_listener`, `close_all`: closing a listener without its trigger, and every socket.
"""
import _thread
import contextlib
import itertools
import selectors
import threading
import time

import waitress.server
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.task import ThreadedTaskDispatcher

from server.lane import request_lane

VERIFIED_WAITRESS = "3.0.2"
# What another release may have changed: the names used below, (module, object) -> its
# attributes, each checked to exist (tests/server/test_lane.py); and the state the overrides
# read or set on instances, which every server test exercises.
PRIVATE_NAMES = {
    ("waitress.task", "ThreadedTaskDispatcher"): ("handler_thread", "add_task",
                                                  "set_thread_count", "start_new_thread"),
    ("waitress.channel", "HTTPChannel"): ("_flush_outbufs_below_high_watermark",
                                          "_flush_exception", "_flush_some", "received",
                                          "service", "readable", "add_channel"),
    ("waitress.server", "BaseWSGIServer"): ("channel_class", "handle_accept", "pull_trigger"),
    ("waitress.wasyncore", None): ("_DISCONNECTED", "_reraised_exceptions", "dispatcher",
                                   "close_all"),
}
INSTANCE_STATE = {
    "ThreadedTaskDispatcher": ("queue", "threads", "stop_count", "active_count", "lock",
                               "queue_cv", "thread_exit_cv", "logger", "queue_logger"),
    "HTTPChannel": ("outbuf_lock", "total_outbufs_len", "request", "requests", "will_close",
                    "connected", "adj", "server"),
    "BaseWSGIServer": ("next_channel_cleanup", "adj"),
    "create_server": ("_dispatcher", "map"),
}

# Which connection the current worker thread is serving (set by `Connection.service`), so
# that the trigger it pulls marks that connection alone (server/eventloop.py).
serving = threading.local()


class BareThreads:
    """waitress's pool threads started bare: no `threading.Thread` object each. With a thread
    for every poll that may wait, its 2.6 KB (an Event, a lock, a dict) is a tenth of what a
    waiting poll costs. (`configure_logging` turns off the thread names in log records, which
    would make one back for each thread that logs.)"""

    def start_new_thread(self, target, thread_no):
        _thread.start_new_thread(target, (thread_no,))


class LaneDispatcher(BareThreads, ThreadedTaskDispatcher):
    """waitress's thread pool, where a thread must hold the lane to take a task from the queue.
    `handler_thread` and `add_task` replace waitress 3.0.2's (waitress/task.py
    `ThreadedTaskDispatcher`), on its lock, queue and thread counts.

    A thread that finishes a request keeps the lane and takes the next one; the others sleep
    until the lane is free with work queued: no hand-off between requests under load.

    The pool keeps `spare` threads (WAITRESS_THREADS) and grows, up to `most`, when work waits
    for a lane place that is free and every thread is taken (by waiting long-polls): a thread
    for each waiting poll, made when it is needed. A thread that finds `spare` others idle
    ends, so that memory follows the polls waiting now. Built on waitress 3's dispatcher (its
    lock, queue and thread counts).
    """

    def __init__(self, lane=request_lane, spare=1, most=None):
        super().__init__()
        self.lane = lane
        self.lock = lane.mutex
        self.queue_cv = threading.Condition(self.lock)
        self.thread_exit_cv = threading.Condition(self.lock)
        self.spare = spare
        self.most = most  # None: only the threads set_thread_count starts
        self._numbers = itertools.count()
        lane.freed = self._wake_one_if_queued

    def _idle_threads(self):
        return len(self.threads) - self.stop_count - self.active_count

    def _wake_one_if_queued(self):
        if self.queue:
            self._wake_or_grow()

    def _wake_or_grow(self):
        if self._idle_threads() > 0:
            self.queue_cv.notify()
        elif self.most is not None and len(self.threads) - self.stop_count < self.most:
            with contextlib.suppress(RuntimeError):  # logged: the queue waits for a thread
                self._start_thread_locked()

    def _start_thread_locked(self):
        """One more thread (it runs once the caller lets go of the lock)."""
        thread_no = next(self._numbers)
        try:
            self.start_new_thread(self.handler_thread, thread_no)
        except RuntimeError as error:
            self.logger.error("cannot start a thread: %s", error)
            raise
        self.threads.add(thread_no)
        self.active_count += 1

    def set_thread_count(self, count):
        with self.lock:
            running = len(self.threads) - self.stop_count
            while running < count:
                self._start_thread_locked()
                running += 1
            if running > count:
                self.stop_count += running - count
                self.queue_cv.notify_all()

    def _may_take_task(self):
        return self.queue and not self.lane.busy and not self.lane.entering

    def _surplus(self):
        return self.most is not None and self._idle_threads() >= self.spare

    def handler_thread(self, thread_no):
        while True:
            with self.lock:
                while not self._may_take_task() and self.stop_count == 0:
                    if self._surplus():  # `spare` others wait idle already: this one ends
                        self.active_count -= 1
                        self.threads.discard(thread_no)
                        self.thread_exit_cv.notify()
                        return
                    self.active_count -= 1
                    self.queue_cv.wait()
                    self.active_count += 1
                if self.stop_count > 0:
                    self.active_count -= 1
                    self.stop_count -= 1
                    self.threads.discard(thread_no)
                    self.thread_exit_cv.notify()
                    break
                task = self.queue.popleft()
                self.lane.take_locked()
            try:
                task.service()
            except BaseException:
                self.logger.exception("Exception when servicing %r", task)
            finally:
                with self.lock:
                    # This thread loops back and takes the next task itself, unless a
                    # returning long-poll is waiting: then the lane is its.
                    self.lane.leave_locked()

    def add_task(self, task):
        with self.lock:
            self.queue.append(task)
            if not self.lane.busy and not self.lane.entering:
                self._wake_or_grow()
            # Queued requests are normal here (they wait for the lane, not for a thread); what
            # is worth a warning is every thread being taken, by long-polls above all.
            if self._idle_threads() <= 0 and (
                    self.most is None or len(self.threads) - self.stop_count >= self.most):
                self.queue_logger.warning("Task queue depth is %d (every thread is busy)",
                                          len(self.queue))


class Connection(HTTPChannel):
    """waitress's connection, on both backends, with three additions.

    - It steps out of the lane while it waits for a client to take its output (past
      `outbuf_high_watermark`): one client that stops reading must not stop the server.
    - A request must arrive within deadlines counted from its first byte (received while no
      earlier request of the connection runs): its head within `server.header_timeout` seconds
      and the whole of it, body included, within `server.request_timeout`; else the connection
      is closed. waitress's own `channel_timeout` is measured from the last byte received, so a
      client sending one header line or one body byte every few seconds (slowloris, slow body)
      would hold its connection forever. Blank lines before a request, which waitress discards,
      do not restart the clock: only a request received whole, and then answered, stops it.
    - Once the server drains (`server.draining`, see server/serve.py), answers carry
      `Connection: close` and a connection with nothing in flight is closed.

    `readable` is called in the loop's thread after each event of the connection and, by
    server/serve.py's loop (server/eventloop.py), for every connection once a second: the
    checks live there.
    It tells that loop which connection a worker serves (`eventloop.serving`), so that the
    trigger a worker pulls marks that connection alone to be asked again.
    """

    receiving_since = None  # when the first byte of the request being received arrived

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # `received` runs in the loop's thread, the end of `service` in a worker's: the clock
        # changes under this lock, taken before (never inside) waitress's `requests_lock`.
        self.clock_lock = threading.Lock()

    def _flush_outbufs_below_high_watermark(self):
        if self.total_outbufs_len > self.adj.outbuf_high_watermark:
            with request_lane.paused():
                self._wait_for_the_client_to_read()

    def _wait_for_the_client_to_read(self):
        """waitress 3.0.2's wait (waitress/channel.py `_flush_outbufs_below_high_watermark`)
        for a client to take its answers, with a deadline:
        a client that takes nothing for CHANNEL_TIMEOUT seconds is cut off, and the thread
        goes back to work. (waitress waits for ever: a few clients pipelining requests and
        never reading would hold a thread each.)"""
        with self.outbuf_lock:
            _, failed = self._flush_exception(self._flush_some, do_close=False)
            if failed:  # the loop closes the connection; wait for it, as waitress does
                self.server.pull_trigger()
                self.outbuf_lock.wait()
                return
            deadline = time.monotonic() + self.adj.channel_timeout
            while self.connected and self.total_outbufs_len > self.adj.outbuf_high_watermark:
                self.server.pull_trigger()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.will_close = True
                    self.connected = False  # `write_soon` raises ClientDisconnected
                    self.server.pull_trigger()
                    return
                unsent = self.total_outbufs_len
                self.outbuf_lock.wait(remaining)
                if self.total_outbufs_len < unsent:  # it reads: the clock starts again
                    deadline = time.monotonic() + self.adj.channel_timeout

    def received(self, data):
        with self.clock_lock:
            if data and self.receiving_since is None:
                self.receiving_since = time.time()
            queued = len(self.requests)
            result = super().received(data)
            if len(self.requests) > queued:
                # A request arrived whole: its clock stops here, not when it is answered
                # (waitress pops the answered request before `service` below can reset the
                # clock, and the loop may ask `readable` in between). A request begun behind
                # it in the same bytes is timed from now.
                self.receiving_since = time.time() if self.request is not None else None
            return result

    def add_channel(self, map=None):
        super().add_channel(map)
        loop = getattr(self.server, "event_loop", None)
        if loop is not None:
            loop.mark(self)  # just accepted: register it

    def service(self):
        if self.server.draining:
            self.requests[0].headers["CONNECTION"] = "close"  # waitress then says so, and closes
        serving.channel = self
        try:
            super().service()
            if not self.connected:
                # waitress pulls no trigger for a connection gone while it was served: the
                # loop must still ask it again, to close it.
                self.server.pull_trigger()
        finally:
            serving.channel = None
        with self.clock_lock:
            # A request is answered. The next one's clock starts now if it has begun to come in
            # behind this one, else at its first byte.
            self.receiving_since = time.time() if self.request is not None else None

    def in_flight(self):
        """A request is being received, queued or served, or its answer is still being sent."""
        return bool(self.request is not None or self.requests or self.total_outbufs_len)

    def request_overdue(self):
        """Checked only while no request of the connection is queued or running."""
        started = self.receiving_since
        if started is None:
            return False
        elapsed = time.time() - started
        request = self.request
        head_done = request is not None and request.headers_finished
        return elapsed > self.server.request_timeout \
            or not head_done and elapsed > self.server.header_timeout

    def readable(self):
        if not self.requests and (self.server.draining and not self.in_flight()
                                  or self.request_overdue()):
            self.will_close = True  # `writable` is then true, and waitress closes it
        return super().readable()


def create_server(app, header_timeout, request_timeout, request_threads=16, **settings):
    """`waitress.server.create_server` (waitress/server.py, 3.0.2) with `Connection`s and the
    lane's dispatcher, which it takes through its private `_dispatcher` argument.

    The server's socket map (listeners, connections, waitress's triggers) is `server.socket_map`.
    """
    sockets = {}
    # With a thread for each poll that may wait, the threads no longer bound how many
    # requests run at once: the lane does, with WAITRESS_THREADS places on PostgreSQL (whose
    # requests wait on the network, so run side by side), one on SQLite.
    request_lane.capacity = 1 if request_lane.active() else request_threads
    pool = LaneDispatcher(spare=request_threads, most=settings.get("threads", request_threads))
    pool.set_thread_count(request_threads)
    settings["_dispatcher"] = pool
    server = waitress.server.create_server(app, map=sockets, **settings)
    for listener in listeners(sockets):
        listener.channel_class = Connection
        listener.header_timeout = header_timeout
        listener.request_timeout = request_timeout
        listener.draining = False
    server.socket_map = sockets
    return server


def listeners(sockets):
    return [item for item in sockets.values()
            if isinstance(item, waitress.server.BaseWSGIServer)]


def connections(sockets):
    return [item for item in sockets.values() if isinstance(item, Connection)]


def dispatch(dispatcher, fd, mask, socket_map):
    """waitress 3.0.2's waitress/wasyncore.py `readwrite`, for a selector's events; no write
    event to a dispatcher that its read event closed."""
    try:
        if mask & selectors.EVENT_READ:
            dispatcher.handle_read_event()
        if mask & selectors.EVENT_WRITE and socket_map.get(fd) is dispatcher:
            dispatcher.handle_write_event()
    except OSError as error:
        if error.args[0] not in wasyncore._DISCONNECTED:
            dispatcher.handle_error()
        else:
            dispatcher.handle_close()
    except wasyncore._reraised_exceptions:
        raise
    except Exception:
        dispatcher.handle_error()


def close_listener(listener):
    """Close a listener but not its trigger, which the worker threads still pull (waitress's
    `BaseWSGIServer.close` closes both): wasyncore's `dispatcher.close`."""
    wasyncore.dispatcher.close(listener)


def close_all(sockets):
    """Close every socket of the server's map (waitress/wasyncore.py `close_all`)."""
    wasyncore.close_all(sockets)
