"""The request lane: on SQLite, one request at a time runs, and the thread that finished one
takes the next.

One process runs Python on one core anyway (the GIL), but SQLite hands the GIL back on every
statement. With sixteen waitress threads running requests side by side, each short query then
cost a round of GIL hand-offs, and each request that ended woke another sleeping thread:
throughput fell by a third from one thread to sixteen. In the lane, queued requests wait in
waitress's queue, not in threads, and under load one thread runs them back to back, as a
single-threaded server would.

A long-poll leaves the lane while it waits (`paused`): another thread takes over the queue, and
the poll comes back in ahead of new requests. So the threads are still needed, for waiting.

`server.waitress_internals.LaneDispatcher` is waitress's task dispatcher made to follow the
lane; `held` puts a request in the lane wherever it runs (the Flask test client, `flask run`,
another WSGI server). PostgreSQL requests wait on the network, so there they run side by
side: under `python app.py` the lane has WAITRESS_THREADS places there (the pool has a thread
more for each poll that may wait, and the lane keeps those from all running requests at once),
and elsewhere `held` does nothing.
"""
import contextlib
import threading

import models


class RequestLane:
    """The lane: at most `capacity` threads in it at once (one on SQLite; on PostgreSQL,
    `create_server` makes it WAITRESS_THREADS); threads coming back in (`entering`) go first."""

    def __init__(self):
        self.mutex = threading.Lock()
        self._entry = threading.Condition(self.mutex)
        self.capacity = 1
        self.running = 0  # threads in the lane
        self.entering = 0  # threads waiting to enter (returning long-polls first of all)
        self._thread = threading.local()
        self.freed = None  # called under `mutex` when the lane is left and no one is entering

    @staticmethod
    def active():
        return models.writes_one_at_a_time()

    @property
    def busy(self):
        return self.running >= self.capacity

    def inside(self):
        return getattr(self._thread, "inside", False)

    @contextlib.contextmanager
    def held(self):
        """Run the block in the lane (at once if this thread is already in it)."""
        if not self.active() or self.inside():
            yield
            return
        self.enter()
        try:
            yield
        finally:
            self.leave()

    @contextlib.contextmanager
    def paused(self):
        """Step out of the lane for a block that only waits."""
        if not self.inside():
            yield
            return
        self.leave()
        try:
            yield
        finally:
            self.enter()

    def enter(self):
        with self.mutex:
            self.entering += 1
            while self.busy:
                self._entry.wait()
            self.entering -= 1
            self.take_locked()

    def take_locked(self):
        self.running += 1
        self._thread.inside = True

    def leave(self):
        with self.mutex:
            self.leave_locked()
            if not self.entering and self.freed:
                self.freed()

    def leave_locked(self):
        """Free a place in the lane; a thread waiting to enter gets it before any queued
        request."""
        self.running -= 1
        self._thread.inside = False
        if self.entering:
            self._entry.notify()


request_lane = RequestLane()
