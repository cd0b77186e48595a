"""The server's loop: waitress's connections on an epoll (through `selectors`) that keeps its
registrations, so that a connection costs the loop something only when it is active.

waitress's own loop (wasyncore's `poll2`) asks every open connection `readable()` and
`writable()` and registers every socket anew on each turn, and turns several times per request:
with 2,000 idle keep-alive connections open, send throughput fell to about a third. Here a
connection is asked again only when something may have changed its answer:
- it had an event (its bytes came in or went out, or it was closed) in this turn;
- a worker thread serving it pulled the trigger (waitress pulls it whenever a worker queues
  output or finishes a request: see `pull_trigger_marking`), or it was just accepted;
- once a second, when the listener's maintenance has looked for idle connections to close, and
  `lane.Connection`'s deadlines for slow clients are checked: then every connection is asked
  (a sweep costs about a microsecond a connection, once a second).

The listeners are asked on every turn: there are one or two, and their `readable()` is where
waitress pauses accepting at the connection limit and runs its maintenance.
"""
import contextlib
import selectors
import threading
import time

from server.waitress_internals import dispatch, serving

ACCEPT_REST_SECONDS = 0.25



class EventLoop:
    def __init__(self, socket_map, listeners):
        self.map = socket_map
        self.selector = selectors.DefaultSelector()
        self.registered = {}  # fd -> (dispatcher, events) as the selector has them
        self._changed = set()  # dispatchers to ask again (marked from any thread)
        self._changed_lock = threading.Lock()
        self._cleanups = {}  # listener -> its next maintenance time, as last seen
        # Given once: scanning the map on every turn would cost the loop every connection.
        self._listeners = list(listeners)
        self._resting = {}  # listener -> when it may accept again
        for listener in self._listeners:
            listener.event_loop = self
            listener.pull_trigger = self.pull_trigger_marking(listener.pull_trigger)
            listener.handle_accept = self.accept_or_rest(listener, listener.handle_accept)
        self.sweep()

    def listeners(self):
        """The listeners still open (server/serve.py's drain closes them)."""
        return [listener for listener in self._listeners if self.is_open(listener)]

    def is_open(self, dispatcher):
        """Not closed yet: closing takes a dispatcher out of the map (and its fd from it)."""
        return self.map.get(dispatcher._fileno) is dispatcher

    def mark(self, dispatcher):
        """Ask `dispatcher` again before the next wait (from any thread; the thread that
        changed it then pulls the trigger, which ends the wait)."""
        with self._changed_lock:
            self._changed.add(dispatcher)

    def pull_trigger_marking(self, pull_trigger):
        """The listener's `pull_trigger`, marking first the connection the calling worker
        serves: waitress's channels pull it after every change a worker makes to them."""
        def pull():
            channel = getattr(serving, "channel", None)
            if channel is not None:
                self.mark(channel)
            # A closed trigger: the server has stopped, and its loop with it.
            with contextlib.suppress(OSError):
                pull_trigger()
        return pull

    def accept_or_rest(self, listener, handle_accept):
        """The listener's `handle_accept`; when accept fails (out of open files, say), the
        listener rests a moment instead of being woken again at once by the connection still
        waiting: a loop spinning on it, logging a traceback each turn, would stop the server."""
        def accept():
            before = len(self.map)
            handle_accept()
            if len(self.map) == before:
                self._resting[listener] = time.monotonic() + ACCEPT_REST_SECONDS
        return accept

    def run_once(self, timeout):
        """One turn: bring the registrations up to date, wait up to `timeout` seconds, and
        dispatch the events. Returns the dispatchers asked again in this turn (a worker
        marked them, or they had an event): only theirs can have changed in it."""
        with self._changed_lock:
            changed, self._changed = self._changed, set()
        for dispatcher in changed:
            self.consider(dispatcher)
        if self._maintenance_ran():
            self.sweep()
        if self._resting:
            timeout = min(timeout, max(0.0, min(self._resting.values()) - time.monotonic()))
        events = self.selector.select(timeout)
        dispatched = []
        for key, mask in events:
            dispatcher = key.data
            if self.map.get(key.fd) is dispatcher:  # not closed by an earlier event
                dispatch(dispatcher, key.fd, mask, self.map)
                dispatched.append(dispatcher)
        for dispatcher in dispatched:
            self.consider(dispatcher)
        changed.update(dispatched)
        return changed

    def _maintenance_ran(self):
        """Ask the listeners (which may run waitress's maintenance); True when it ran.

        Rests that are over end here, and so does the rest of a listener that was closed
        (server/serve.py's drain closes each after a last, empty accept): left behind, its time long
        past would make every later wait a zero timeout, and the loop would take a core."""
        ran = False
        now = time.monotonic()
        resting = {}
        for listener in self.listeners():
            until = self._resting.get(listener, 0)
            if until > now:
                resting[listener] = until
                self._unwatch(listener)
            else:
                self.consider(listener)
            cleanup = listener.next_channel_cleanup
            if self._cleanups.get(listener) != cleanup:
                self._cleanups[listener] = cleanup
                ran = True
        self._resting = resting
        return ran

    def sweep(self):
        """Ask every connection again, and forget the closed ones."""
        for fd, (dispatcher, _) in list(self.registered.items()):
            if self.map.get(fd) is not dispatcher:
                self._unregister(fd)
        for dispatcher in list(self.map.values()):
            self.consider(dispatcher)

    def consider(self, dispatcher):
        """Register `dispatcher` for what it wants now (nothing, once it is closed)."""
        fd = dispatcher._fileno
        if fd is None or self.map.get(fd) is not dispatcher:  # closed: epoll forgot it
            self._forget(dispatcher)
            return
        dispatcher._loop_fd = fd  # its _fileno is None once it is closed
        events = 0
        if dispatcher.readable():
            events |= selectors.EVENT_READ
        if dispatcher.writable() and not dispatcher.accepting:
            events |= selectors.EVENT_WRITE
        known = self.registered.get(fd)
        if known is not None and known[0] is dispatcher and known[1] == events:
            return
        if known is not None:
            self._unregister(fd)  # another dispatcher's, or other events
        if events:
            try:
                self.selector.register(fd, events, dispatcher)
            except OSError:  # closed by a worker meanwhile (waitress's send_continue may)
                return
            self.registered[fd] = (dispatcher, events)

    def _unwatch(self, dispatcher):
        known = self.registered.get(dispatcher._fileno)
        if known is not None and known[0] is dispatcher:
            self._unregister(dispatcher._fileno)

    def _forget(self, dispatcher):
        fd = getattr(dispatcher, "_loop_fd", None)
        known = self.registered.get(fd)
        if known is not None and known[0] is dispatcher:
            self._unregister(fd)

    def _unregister(self, fd):
        del self.registered[fd]
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(fd)

    def close(self):
        self.selector.close()
