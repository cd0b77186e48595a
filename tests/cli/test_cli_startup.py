"""Start-up belongs to serving, not to the commands: `flask --app app ...` in a child process, as
an operator runs it. --help works with the database unreachable, commands neither migrate nor
start the server's threads, `db upgrade` alone changes the schema, and serving migrates."""
import logging
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import models
from app import create_app
from cli import agents, db, users
from storage import migrations
from support.helpers import ROOT, flask_command
from support.legacy_schema import build_version_1

LATEST = migrations.LATEST
UUID = "123e4567-e89b-12d3-a456-426614174000"
UNREACHABLE_POSTGRES = "postgresql://postgres@127.0.0.1:1/nowhere"
GROUPS = {"users": users.group, "agents": agents.group, "db": db.group}
COMMANDS = [(), ("users",), ("users", "add"), ("users", "import"), ("users", "remove"),
            ("users", "list"), ("agents",), ("agents", "add"), ("agents", "list"),
            ("agents", "remove"), ("db",), ("db", "upgrade"), ("db", "copy")]


def run_all(database_url, commands):
    """Each command in its own child process, several at once: [(command, result)]."""
    with ThreadPoolExecutor(4) as pool:
        results = pool.map(lambda command: flask_command(database_url, *command), commands)
        return list(zip(commands, results, strict=True))


def shown(command, result):
    return f"flask {' '.join(command)}: exit {result.returncode}\n{result.stderr}"


def test_every_command_has_its_help_checked():
    commands = {(), *((name,) for name in GROUPS),
                *((name, command) for name, group in GROUPS.items() for command in group.commands)}
    assert set(COMMANDS) == commands


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite-in-a-missing-folder", "postgresql-unreachable"])
def test_help_works_with_the_database_unreachable(tmp_path, database):
    missing = tmp_path / "missing"
    url = (f"sqlite:///{missing / 'chat.db'}" if database.startswith("sqlite")
           else UNREACHABLE_POSTGRES)
    for command, result in run_all(url, [(*command, "--help") for command in COMMANDS]):
        assert result.returncode == 0, shown(command, result)
        assert result.stdout.startswith("Usage:"), shown(command, result)
        assert "Traceback" not in result.stdout + result.stderr, shown(command, result)
    assert os.listdir(tmp_path) == []  # no database file, no folder for one


@pytest.mark.slow
def test_a_data_command_without_a_database_says_how_to_make_one(tmp_path):
    path = tmp_path / "chat.db"
    result = flask_command(f"sqlite:///{path}", "users", "list")
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: no database yet (")
    assert "flask --app app db upgrade" in line
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_commands_on_an_unreachable_database_fail_without_a_traceback():
    for command, result in run_all(UNREACHABLE_POSTGRES, [("users", "list"), ("db", "upgrade")]):
        assert result.returncode == 1, shown(command, result)
        assert result.stderr.startswith("Error: "), shown(command, result)
        assert "Traceback" not in result.stderr, shown(command, result)


@pytest.mark.slow
@pytest.mark.parametrize("start", [0, 1], ids=["empty", "version-1"])
def test_db_upgrade_says_what_it_did_then_that_the_schema_is_current(database_url, start):
    if start == 1:
        build_version_1(database_url, record_version=True)
    first = flask_command(database_url, "db", "upgrade")
    assert first.returncode == 0, first.stderr
    assert f"schema upgraded from version {start} to {LATEST}" in first.stdout
    again = flask_command(database_url, "db", "upgrade")
    assert again.returncode == 0, again.stderr
    assert f"schema already at version {LATEST}" in again.stdout

    listed = flask_command(database_url, "users", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == ("old@example.com\tOld\t2026-01-02\n" if start else "")
    assert listed.stderr.splitlines() == [f"{start} user(s)"]  # and no start-up log


@pytest.mark.slow
def test_commands_never_migrate(database_url, tmp_path):
    build_version_1(database_url, record_version=True)
    users_file = tmp_path / "users.csv"
    users_file.write_text(f"email,uuid\nnew@example.com,{UUID}\n")
    commands = [("users", "add", "new@example.com", UUID), ("users", "import", str(users_file)),
                ("users", "remove", "old@example.com"), ("users", "list"),
                ("agents", "add", "ann"), ("agents", "list"), ("agents", "remove", "ann"),
                ("db", "copy", "--to", f"sqlite:///{tmp_path / 'copy.db'}")]
    for command, result in run_all(database_url, commands):
        assert result.returncode == 1, shown(command, result)
        [line] = result.stderr.splitlines()
        assert line == (f"Error: the database schema is at version 1 and this release needs "
                        f"{LATEST}: run  flask --app app db upgrade  first"), shown(command, result)
    models.configure_database(database_url)
    assert migrations.current_version() == 1
    assert not (tmp_path / "copy.db").exists()


def test_a_command_starts_no_thread_and_logs_no_start_up(database_url, caplog):
    caplog.set_level(logging.INFO)
    app = create_app({"TESTING": True, "DATABASE_URL": database_url})
    runner = app.test_cli_runner()
    assert runner.invoke(args=["db", "upgrade"]).exit_code == 0
    threads = set(threading.enumerate())
    for command in (["users", "add", "a@example.com", UUID], ["users", "list"],
                    ["agents", "list"]):
        result = runner.invoke(args=command)
        assert result.exit_code == 0, result.output
    assert set(threading.enumerate()) <= threads  # none started (another test's may end)
    assert "database:" not in caplog.text and "no user yet" not in caplog.text


def test_serving_migrates_on_the_first_request(database_url, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    on_sqlite = database_url.startswith("sqlite")
    path = tmp_path / "data" / "chat.db"
    app = create_app({"TESTING": True,
                      "DATABASE_URL": f"sqlite:///{path}" if on_sqlite else database_url})
    if on_sqlite:
        assert not path.parent.exists()
    else:
        assert migrations.current_version() == 0
        models.database.close()
    assert "schema upgraded" not in caplog.text

    response = app.test_client().get("/healthz")
    assert response.status_code == 200, response.json
    assert f"database schema upgraded from version 0 to {LATEST}" in caplog.text
    if on_sqlite:
        assert path.exists()
    assert migrations.current_version() == LATEST


# `flask ...` where the PostgreSQL driver cannot be imported (not installed).
WITHOUT_DRIVER = ["-c", "import sys; sys.modules['psycopg'] = sys.modules['psycopg2'] = None; "
                        "from flask.cli import main; "
                        "sys.argv = ['flask', '--app', 'app', *sys.argv[1:]]; main()"]


def flask_without_driver(*args):
    environment = {**os.environ, "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test"}
    return subprocess.run([sys.executable, *WITHOUT_DRIVER, *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_help_works_without_the_postgresql_driver_and_using_the_database_says_what_to_install():
    for command in [("--help",), ("users", "--help"), ("db", "upgrade", "--help")]:
        result = flask_without_driver(*command)
        assert result.returncode == 0, result.stderr
        assert "Usage:" in result.stdout
    used = flask_without_driver("users", "list")
    assert used.returncode == 1
    assert used.stderr.strip().splitlines()[-1] == (
        "Error: cannot use the database (PostgreSQL database test on 127.0.0.1): PostgreSQL "
        "needs its driver: pip install -r requirements-postgres.txt")
    assert "Traceback" not in used.stderr
