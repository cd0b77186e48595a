"""Which long-polls are waiting: the state a test of waiting polls waits on (the service shows
it nowhere). Used by the `waiting` fixture of the test modules that need it."""
import contextlib
import threading

from server import lane


def record_waiting(monkeypatch):
    """A list that gets the thread id of each long-poll stepping out of the request lane to
    wait (again each time it goes back to waiting, so count distinct ids)."""
    threads = []
    step_out = lane.request_lane.paused

    @contextlib.contextmanager
    def watched():
        threads.append(threading.get_ident())
        with step_out():
            yield

    monkeypatch.setattr(lane.request_lane, "paused", watched)
    return threads
