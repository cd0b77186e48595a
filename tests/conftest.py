"""Fixtures: a fresh app on a fresh database per test, customers and agents on its test client.

The database is a SQLite file under tmp_path, or the PostgreSQL database named by
TEST_DATABASE_URL (emptied before each test) when that is set. Shared helpers are in helpers.py.
"""
import os

import psycopg
import pytest

from app import create_app
from server.lifecycle import start_serving
from support import helpers
from support.waiting_polls import record_waiting


def reset_postgres(url):
    helpers.release_database()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public")


@pytest.fixture(autouse=True)
def close_connections():
    """Whatever database a test pointed the models at last, its connections (and SQLite's
    checkpoint thread) end with the test."""
    yield
    helpers.release_database()


@pytest.fixture(autouse=True)
def slow_work_only_when_marked(request):
    """`running_server` and `flask_command` refuse to run in a test not marked `slow`, so that
    `pytest -m "not slow"` leaves none out by mistake."""
    helpers.slow_work_allowed = request.node.get_closest_marker("slow") is not None
    yield
    helpers.slow_work_allowed = False


@pytest.fixture
def database_url(tmp_path):
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        reset_postgres(url)
        return url
    return f"sqlite:///{tmp_path / 'chat.db'}"


@pytest.fixture
def make_app(database_url):
    """`make_app(**config)`: an app on the test's database (or config's DATABASE_URL), with
    `config` over the defaults, started as a server starts it (schema migrated, background
    thread running)."""

    def make(**config):
        app = create_app({"TESTING": True, "DATABASE_URL": database_url, **config})
        start_serving(app)
        return app

    yield make
    helpers.release_database()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def make_customer(app, client):
    def make(email=None, uuid=None, name=None):
        return helpers.new_customer(app, email, uuid, name, client)

    return make


@pytest.fixture
def customer(make_customer):
    return make_customer(email="user@example.com", name="Ada")


@pytest.fixture
def waiting(monkeypatch):
    """The threads whose long-poll has stepped out of the request lane to wait, so far (a
    thread again each time its poll goes back to waiting: count distinct ids)."""
    return record_waiting(monkeypatch)


@pytest.fixture
def make_agent(app, client):
    def make(name="alice", display_name=None):
        return helpers.new_agent(app, name, display_name, client)

    return make


@pytest.fixture
def agent(make_agent):
    return make_agent("alice", "Alice")
