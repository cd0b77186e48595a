"""SQLite's write-ahead log, copied back into the database file from a thread of its own."""
import logging
import sqlite3
import threading

from models import database, database_switch_hooks, is_sqlite, sqlite_writer
from storage.trouble import database_trouble

logger = logging.getLogger("models")

CHECKPOINT_SECONDS = 0.2


class BackgroundCheckpoints:
    """On SQLite, copy the write-ahead log back into the database file from a thread of its
    own, several times a second.

    Left to SQLite, the commit that takes the log past 1,000 pages does the copy and waits for
    it, and every request queued behind it waits too: a checkpoint every 100 or so sends, each
    with its fsyncs. Here a PASSIVE checkpoint runs beside the requests (it blocks neither
    readers nor writers), and a page changed by many commits is copied once.
    """

    def __init__(self):
        self._stop = None
        self._thread = None

    def start(self):
        """Start for the configured database (nothing to do on PostgreSQL)."""
        self.stop()
        if not is_sqlite() or database.obj.database in ("", ":memory:"):
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoints",
                                        args=(database.obj.database, self._stop), daemon=True)
        self._thread.start()

    def stop(self):
        if self._thread is not None:
            self._stop.set()
            self._thread.join(10)
            self._thread = None

    @staticmethod
    def _run(path, stop):
        connection = None
        try:
            while not stop.wait(CHECKPOINT_SECONDS):
                try:
                    if connection is None:  # (a folder removed meanwhile fails here: retried)
                        connection = open_checkpoint_connection(path)
                    # Most of the log is copied while requests go on. The last few commits are
                    # copied with this process's writers held off: a log copied to its end is
                    # started again from the top by the next writer, and one that never is
                    # would only grow.
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    with sqlite_writer:
                        connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as error:  # the next round tries again
                    # Five rounds a second: a read-only or full disk would flood the log.
                    database_trouble.log.once_a_minute(
                        logger, logging.WARNING, f"background checkpoint failed: {error}")
        finally:
            if connection is not None:
                connection.close()


def open_checkpoint_connection(path):
    return sqlite3.connect(path, timeout=10)


background_checkpoints = BackgroundCheckpoints()
database_switch_hooks.append(background_checkpoints.stop)
