"""Fixtures: a fresh app on a fresh database per test, and customers who can sign requests.

The database is a SQLite file under tmp_path, or the PostgreSQL database named by
TEST_DATABASE_URL (emptied before each test) when that is set.
"""
import hashlib
import hmac
import os
import socket
import subprocess
import sys
import time
import uuid as uuid_module
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import pytest
import requests

import accounts
import models
from app import create_app


def sign(email, uuid):
    """The client's token: hex HMAC-SHA256, key = uuid, message = email."""
    return hmac.new(uuid.encode(), email.encode(), hashlib.sha256).hexdigest()


def reset_postgres(url):
    if models.database.obj is not None:
        models.database.obj.close_all()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public")


@pytest.fixture(autouse=True)
def close_connections():
    """Whatever app a test made last, its pooled connections close with the test."""
    yield
    models.background_checkpoints.stop()
    if models.database.obj is not None:
        models.database.obj.close_all()


@pytest.fixture
def database_url(tmp_path):
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        reset_postgres(url)
        return url
    return f"sqlite:///{tmp_path / 'chat.db'}"


@pytest.fixture
def app(database_url):
    app = create_app({"TESTING": True, "DATABASE_URL": database_url})
    yield app
    models.database.close_all()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@dataclass
class Customer:
    email: str
    uuid: str
    client: object

    @property
    def token(self):
        return sign(self.email, self.uuid)

    @property
    def headers(self):
        return {"Authorization": f"Bearer {self.token}"}

    def post(self, path, data, headers=None):
        return self.client.post(path, json={"data": {"email": self.email, **data}},
                                headers={**self.headers, **(headers or {})})

    def create(self, message="Hi, I have a quick question!", **data):
        response = self.post("/api/client/live/create",
                             {"created_at": 1679223400, "message": message, **data})
        assert response.status_code == 200, response.json
        return response.json["data"]["chatId"]

    def send(self, chat_id, message="Where can I find my subscription URL?", headers=None,
             **data):
        return self.post("/api/client/live/chat",
                         {"chat_id": chat_id, "message": message, **data}, headers)

    def poll(self, chat_id, **data):
        return self.post("/api/client/live/messages", {"chat_id": chat_id, **data})

    def list(self, **data):
        return self.post("/api/client/live/list", data)

    def read(self, chat_id, seq):
        return self.post("/api/client/live/read", {"chat_id": chat_id, "seq": seq})

    def close(self, chat_id):
        return self.post("/api/client/live/close", {"chat_id": chat_id})


@pytest.fixture
def make_customer(app, client):
    def make(email=None, uuid=None, name=None):
        email = email or f"user-{uuid_module.uuid4().hex[:8]}@example.com"
        uuid = uuid or str(uuid_module.uuid4())
        with app.app_context():
            accounts.save_user(email, uuid, name)
        return Customer(email=email, uuid=uuid, client=client)

    return make


def seed_customers(app, count, prefix="customer"):
    """`count` users added straight to the database: [(email, token)], for load tests that
    talk to a server of their own."""
    customers = []
    with app.app_context():
        for number in range(count):
            email, key = f"{prefix}{number}@example.com", str(uuid_module.uuid4())
            accounts.save_user(email, key)
            customers.append((email, sign(email, key)))
    return customers


@pytest.fixture
def customer(make_customer):
    return make_customer(email="user@example.com", name="Ada")


def assert_error(response, status, code):
    """The whole error envelope: status, shape, code."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    body = response.json
    assert body["status"] == "error"
    assert body["data"] is None
    assert isinstance(body["message"], str) and body["message"]
    assert body["error"]["code"] == code
    return body


# --- a real waitress server in a child process -------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: str

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()


def wait_until_healthy(url, process, log_path, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            with open(log_path) as handle:
                raise RuntimeError(f"server exited early:\n{handle.read()}")
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise RuntimeError("server did not become healthy")


@contextmanager
def running_server(tmp_path, database_url, command=None, env=None):
    """`python app.py` (or `command`, with {port} filled in) on a free loopback port.

    Rate limits are off unless `env` turns them on: these servers take load from one address.
    """
    port = free_port()
    log_path = str(tmp_path / f"server-{port}.log")
    environment = {**os.environ, "DATABASE_URL": database_url, "HOST": "127.0.0.1",
                   "PORT": str(port), "RATELIMIT_ENABLED": "false", **(env or {})}
    command = [part.format(port=port) for part in (command or [sys.executable, "app.py"])]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, log_path)
        yield Server(url, process, log_path)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- agents --------------------------------------------------------------------------------

@dataclass
class AgentClient:
    name: str
    token: str
    client: object

    @property
    def headers(self):
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path, **params):
        return self.client.get(f"/api/agent{path}", query_string=params, headers=self.headers)

    def post(self, path, data=None, headers=None):
        body = {"json": {"data": data}} if data is not None else {}
        return self.client.post(f"/api/agent{path}", headers={**self.headers, **(headers or {})},
                                **body)

    def reply(self, chat_id, message="How can I help?", headers=None, **data):
        return self.post(f"/chats/{chat_id}/messages", {"message": message, **data}, headers)


@pytest.fixture
def make_agent(app, client):
    def make(name="alice", display_name=None):
        with app.app_context():
            _, token = accounts.add_agent(name, display_name)
        return AgentClient(name=name, token=token, client=client)

    return make


@pytest.fixture
def agent(make_agent):
    return make_agent("alice", "Alice")
