"""A database that is read-only, full or corrupt: 503 `database_unavailable` on the requests it
breaks (never 500), /healthz 503 while writes fail, and the cause logged once a minute, not once
per request.

The SQLite cases run on a SQLite file of their own whichever backend the suite runs on; the
PostgreSQL one needs TEST_DATABASE_URL.
"""
import logging
import os
import shutil
import sqlite3
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

import models
from storage import checkpoints
from support.helpers import assert_error, new_customer, release_database, wait_until

BIG = "x" * 5_000


@pytest.fixture
def sqlite_app(tmp_path, make_app):
    return make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'chat.db'}", RATELIMIT_ENABLED=False)


def unavailable_lines(caplog):
    return [record.getMessage() for record in caplog.records
            if record.getMessage().startswith("database unavailable")]


def on_new_connections(app, pragma, value):
    """Every connection opened from now on runs `PRAGMA pragma = value`."""
    with app.app_context():
        models.database.pragma(pragma, value, permanent=True)
    release_database()


def test_a_read_only_database_answers_503_to_writes_and_logs_the_cause_once(sqlite_app,
                                                                            caplog):
    customer = new_customer(sqlite_app)
    chat_id = customer.create()
    # What a read-only file or file system does to every write (as root, chmod would not).
    on_new_connections(sqlite_app, "query_only", 1)

    health = customer.client.get("/healthz")  # the write probe finds it before any request
    assert_error(health, 503, "database_unavailable")
    with caplog.at_level(logging.INFO):
        for _ in range(5):
            assert_error(customer.send(chat_id), 503, "database_unavailable")
    assert customer.poll(chat_id).status_code == 200  # reading still works
    assert unavailable_lines(caplog) == [
        "database unavailable: attempt to write a readonly database"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes a 0o444 file all the same "
                                              "(the query_only case covers root)")
def test_a_read_only_file_answers_503(tmp_path, sqlite_app, caplog):
    customer = new_customer(sqlite_app)
    chat_id = customer.create()
    release_database()  # the last connection folds the log into the file and removes it
    os.chmod(tmp_path / "chat.db", 0o444)
    os.chmod(tmp_path, 0o555)  # nor may SQLite make a -wal beside it
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                assert_error(customer.send(chat_id), 503, "database_unavailable")
            assert_error(customer.client.get("/healthz"), 503, "database_unavailable")
    finally:
        os.chmod(tmp_path, 0o755)
    assert len(unavailable_lines(caplog)) == 1


def test_a_full_disk_answers_503_logs_the_real_cause_once_and_healthz_follows(sqlite_app,
                                                                              caplog):
    customer = new_customer(sqlite_app)
    chat_id = customer.create()
    with sqlite_app.app_context():
        pages = models.database.execute_sql("PRAGMA page_count").fetchone()[0]
    on_new_connections(sqlite_app, "max_page_count", pages)  # no room to grow: "full"
    assert customer.client.get("/healthz").status_code == 200  # nothing has failed yet

    with caplog.at_level(logging.INFO):
        answers = [customer.send(chat_id, BIG).status_code for _ in range(12)]
        assert set(answers) <= {200, 503} and answers[-3:] == [503, 503, 503], answers
        assert_error(customer.client.get("/healthz"), 503, "database_unavailable")
    # The cause, not the failed ROLLBACK that followed it; once, not once per request.
    assert unavailable_lines(caplog) == ["database unavailable: database or disk is full"]
    assert "cannot rollback" not in caplog.text

    on_new_connections(sqlite_app, "max_page_count", 1_000_000)  # room again
    assert customer.send(chat_id, BIG).status_code == 200
    assert customer.client.get("/healthz").status_code == 200


def test_a_corrupt_database_answers_503_never_500(tmp_path, sqlite_app, caplog):
    customer = new_customer(sqlite_app)
    chat_id = customer.create()
    release_database()
    path = tmp_path / "chat.db"
    with open(path, "r+b") as database_file:  # every page after the schema's, overwritten
        database_file.seek(4096)
        database_file.write(b"\xa5" * (os.path.getsize(path) - 4096))

    with caplog.at_level(logging.INFO):
        for _ in range(3):
            assert_error(customer.send(chat_id), 503, "database_unavailable")
            assert_error(customer.poll(chat_id), 503, "database_unavailable")
        assert_error(customer.client.get("/healthz"), 503, "database_unavailable")
    assert unavailable_lines(caplog) == ["database unavailable: database disk image is malformed"]


def test_the_same_cause_is_logged_again_a_minute_later_with_the_count(sqlite_app, caplog,
                                                                      monkeypatch):
    customer = new_customer(sqlite_app)
    chat_id = customer.create()
    on_new_connections(sqlite_app, "query_only", 1)
    now = [1000.0]
    monkeypatch.setattr(models.database_trouble.log, "clock", lambda: now[0])

    with caplog.at_level(logging.INFO):
        for _ in range(4):
            customer.send(chat_id)
        now[0] += 59
        customer.send(chat_id)
        assert len(unavailable_lines(caplog)) == 1
        now[0] += 2  # a minute after the first line
        customer.send(chat_id)
    assert unavailable_lines(caplog)[1] == (
        "database unavailable: attempt to write a readonly database "
        "(and 4 more times since it was last logged)")


def test_healthz_recovers_a_minute_after_the_last_failure(sqlite_app, monkeypatch):
    """Nothing may write to clear the failure (a load balancer that took the instance out sends
    nothing): a minute without another failure is enough."""
    customer = new_customer(sqlite_app)
    chat_id = customer.create()
    with sqlite_app.app_context():
        pages = models.database.execute_sql("PRAGMA page_count").fetchone()[0]
    on_new_connections(sqlite_app, "max_page_count", pages)
    now = [1000.0]
    monkeypatch.setattr(models.database_trouble.log, "clock", lambda: now[0])
    wait_until(lambda: customer.send(chat_id, BIG).status_code == 503, what="a full disk")
    now[0] += 30
    assert_error(customer.client.get("/healthz"), 503, "database_unavailable")
    now[0] += 31
    assert customer.client.get("/healthz").status_code == 200


class FailingCheckpoints(sqlite3.Connection):
    """The checkpoint thread's connection on a read-only disk: every checkpoint fails."""

    rounds = 0

    def execute(self, *args):
        FailingCheckpoints.rounds += 1
        raise sqlite3.OperationalError("attempt to write a readonly database")


def test_the_checkpoint_thread_warns_once_not_five_times_a_second(sqlite_app, monkeypatch,
                                                                   caplog):
    FailingCheckpoints.rounds = 0
    monkeypatch.setattr(checkpoints, "open_checkpoint_connection",
                        lambda path: sqlite3.connect(path, factory=FailingCheckpoints))
    with caplog.at_level(logging.WARNING, logger="models"):
        with sqlite_app.app_context():
            checkpoints.background_checkpoints.start()
        wait_until(lambda: FailingCheckpoints.rounds >= 10, what="ten failed checkpoints")
        checkpoints.background_checkpoints.stop()
    warnings = [record.getMessage() for record in caplog.records if record.name == "models"]
    assert warnings == ["background checkpoint failed: attempt to write a readonly database"]


@pytest.fixture
def read_only_postgres(database_url):
    """Switches the test's PostgreSQL database to read-only for new connections (what a hot
    standby, or default_transaction_read_only, does), and back at the end."""
    if not database_url.startswith("postgres"):
        pytest.skip("a PostgreSQL fault: runs in the PostgreSQL pass of the suite")
    name = urlsplit(database_url).path.lstrip("/")

    def switch(read_only):
        with psycopg.connect(database_url, autocommit=True,
                             options="-c default_transaction_read_only=off") as connection:
            connection.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only "
                                       "= {}").format(sql.Identifier(name),
                                                      sql.SQL("on" if read_only else "off")))
        release_database()

    yield switch
    switch(False)


def test_a_read_only_postgres_answers_503_to_writes(make_app, read_only_postgres, caplog):
    app = make_app(RATELIMIT_ENABLED=False)
    customer = new_customer(app)
    chat_id = customer.create()
    read_only_postgres(True)

    assert_error(customer.client.get("/healthz"), 503, "database_unavailable")
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            assert_error(customer.send(chat_id), 503, "database_unavailable")
    assert customer.poll(chat_id).status_code == 200
    [line] = unavailable_lines(caplog)
    assert "read-only transaction" in line

    read_only_postgres(False)
    assert customer.send(chat_id).status_code == 200
    assert customer.client.get("/healthz").status_code == 200


def test_healthz_is_200_as_soon_as_a_lost_database_is_back(tmp_path, make_app, caplog):
    """Unreachable is what the probe itself sees: no minute of 503 after it is back."""
    folder = tmp_path / "data"
    app = make_app(DATABASE_URL=f"sqlite:///{folder / 'chat.db'}", RATELIMIT_ENABLED=False)
    customer = new_customer(app)
    chat_id = customer.create()
    release_database()
    shutil.move(folder, tmp_path / "elsewhere")  # the disk holding it is gone

    with caplog.at_level(logging.INFO):
        for _ in range(3):
            assert_error(customer.send(chat_id), 503, "database_unavailable")
        assert_error(customer.client.get("/healthz"), 503, "database_unavailable")
    assert unavailable_lines(caplog) == ["database unavailable: unable to open database file"]

    shutil.move(tmp_path / "elsewhere", folder)
    assert customer.client.get("/healthz").status_code == 200
    assert customer.send(chat_id).status_code == 200


def unusable_database_urls(tmp_path):
    in_a_file = tmp_path / "file.txt"
    in_a_file.write_text("not a folder")
    too_new = tmp_path / "new.db"
    with sqlite3.connect(too_new) as connection:
        connection.execute("CREATE TABLE schema_version (id INTEGER PRIMARY KEY, "
                           "version INTEGER, applied_at TEXT)")
        connection.execute("INSERT INTO schema_version (version) VALUES (99)")
    connection.close()
    return {"folder is a file": (f"sqlite:///{in_a_file / 'chat.db'}",
                                 f"SQLite file {in_a_file / 'chat.db'}): Not a directory: "
                                 f"{in_a_file}"),
            "schema too new": (f"sqlite:///{too_new}",
                               f"SQLite file {too_new}): the database schema is at version 99")}


@pytest.mark.slow
@pytest.mark.parametrize("case", ["folder is a file", "schema too new"])
def test_python_app_py_on_an_unusable_database_says_so_in_one_line(tmp_path, case):
    import subprocess
    import sys

    from support.helpers import ROOT, free_port
    url, said = unusable_database_urls(tmp_path)[case]
    environment = {**os.environ, "DATABASE_URL": url, "HOST": "127.0.0.1",
                   "PORT": str(free_port())}
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        f"error: cannot use the database ({said}"), result.stderr
    assert "Traceback" not in result.stderr


def test_start_up_failing_on_each_request_is_logged_once_a_minute(tmp_path, caplog):
    from app import create_app
    url, _ = unusable_database_urls(tmp_path)["folder is a file"]
    client = create_app({"TESTING": True, "DATABASE_URL": url}).test_client()
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            assert client.get("/healthz").status_code >= 500
    lines = [record.getMessage() for record in caplog.records
             if record.getMessage().startswith("start-up failed")]
    assert lines == ["start-up failed; the next request tries again: Not a directory: "
                     f"{tmp_path / 'file.txt'}"]
