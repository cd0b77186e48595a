"""What many tests share: signing, customers and agents on a test client, the error envelope,
waiting on a condition, and the service in a child process (a waitress server or a `flask`
command). Fixtures live in conftest.py."""
import hashlib
import hmac
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid as uuid_module
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import redis
import requests

import models
from chat import accounts
from events import webhooks
from storage import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sign(email, uuid):
    """The client's token: hex HMAC-SHA256, key = uuid, message = email."""
    return hmac.new(uuid.encode(), email.encode(), hashlib.sha256).hexdigest()


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


def release_database():
    """Stop the background threads that use the pool (SQLite's checkpoints, the webhook
    sender), then close every pooled connection: at the end of a test, and before a test hands
    its database to a server process. (Closing a connection another thread is using can crash
    the driver.)"""
    webhooks.stop_sending()
    checkpoints.background_checkpoints.stop()
    if models.database.obj is not None:
        models.database.obj.close_all()


def wait_until(condition, timeout=30, what=None):
    """Call `condition` until it returns something true, and return that; fail after `timeout`
    seconds. For state that changes in another thread or process: the deadline is generous
    because a slow machine only makes the wait longer, never the test wrong. `what` (text, or
    a function giving it at the deadline) says what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            described = what() if callable(what) else what or condition.__name__
            raise AssertionError(f"waited {timeout} s for {described}")
        time.sleep(0.02)  # the polling interval, not a guess at how long anything takes


# --- customers and agents on a Flask test client ------------------------------------------

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


def new_customer(app, email=None, uuid=None, name=None, client=None):
    """A user saved straight to `app`'s database, as a Customer on `client` (a new test client
    of `app` when none is given)."""
    email = email or f"user-{uuid_module.uuid4().hex[:8]}@example.com"
    uuid = uuid or str(uuid_module.uuid4())
    with app.app_context():
        accounts.save_user(email, uuid, name)
    return Customer(email=email, uuid=uuid, client=client or app.test_client())


def new_agent(app, name, display_name=None, client=None):
    """An agent added straight to `app`'s database, as an AgentClient on `client`."""
    with app.app_context():
        _, token = accounts.add_agent(name, display_name)
    return AgentClient(name=name, token=token, client=client or app.test_client())


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


def live_post(session, base_url, path, email, token, data, headers=None, timeout=30):
    """POST /api/client/live/{path} to a real server, signed as the customer `email`."""
    return session.post(f"{base_url}/api/client/live/{path}", timeout=timeout,
                        json={"data": {"email": email, **data}},
                        headers={"Authorization": f"Bearer {token}", **(headers or {})})


# --- the service in a child process ------------------------------------------------------

def flask_command(database_url, *args, timeout=60):
    """`flask --app app ARGS` as an operator runs it, in a child process on `database_url`."""
    assert slow_work_allowed, "a test that runs the flask command must be marked @pytest.mark.slow"
    environment = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], cwd=ROOT,
                          env=environment, capture_output=True, text=True, timeout=timeout)


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


# Set by conftest.py for each test: only tests marked `server` may start one, so that
# `pytest -m "not server"` never does.
slow_work_allowed = False


def wait_until_healthy(server, timeout=60):
    def healthy():
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log()}")
        try:
            return requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    wait_until(healthy, timeout, what=f"{server.url}/healthz to answer 200")


# `python app.py`, reporting in its log each time a request steps out of the request lane to
# wait: a long-poll waiting for news, or an answer held up by a client that stopped reading.
# That is the state server tests wait on, and the service itself shows it nowhere.
WATCHED_SERVER = [sys.executable, "-c", textwrap.dedent("""\
    import contextlib
    import threading

    from app import create_app
    from server import lane, serve

    step_out = lane.request_lane.paused


    @contextlib.contextmanager
    def reported():
        print("lane: stepped out in thread", threading.get_ident(), flush=True)
        with step_out():
            yield


    lane.request_lane.paused = reported
    serve.main(create_app)
""")]


def stepped_out(server):
    """The threads of a WATCHED_SERVER whose request has stepped out of the lane to wait."""
    return {line.split()[-1] for line in server.log().splitlines()
            if line.startswith("lane: stepped out in thread")}


@contextmanager
def running_server(tmp_path, database_url, command=None, env=None, port=None):
    """`python app.py` (or `command`, with {port} filled in) on a free loopback port (or on
    `port`: a server started again where a client expects it).

    Rate limits are off unless `env` turns them on: these servers take load from one address.
    """
    assert slow_work_allowed, "a test that starts a server must be marked @pytest.mark.slow"
    port = port or free_port()
    log_path = str(tmp_path / f"server-{port}-{time.monotonic_ns()}.log")
    environment = {**os.environ, "DATABASE_URL": database_url, "HOST": "127.0.0.1",
                   "PORT": str(port), "RATELIMIT_ENABLED": "false",
                   "PYTHONUNBUFFERED": "1",  # the log has each line as soon as it is printed
                   **(env or {})}
    command = [part.format(port=port) for part in (command or [sys.executable, "app.py"])]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log,
                                   stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_until_healthy(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- shared checks ------------------------------------------------------------------------

def redis_url():
    url = "redis://127.0.0.1:6379/15"
    try:
        redis.Redis.from_url(url, socket_timeout=1).ping()
    except redis.RedisError:
        if os.environ.get("CI"):
            raise
        pytest.skip("no Redis on 127.0.0.1:6379 (CI always has one)")
    return url


def expect_one_line(stderr, name, words):
    """What a refused setting prints: one line naming it and what is wrong."""
    assert "Traceback" not in stderr
    assert stderr.endswith("\n") and stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"error: setting {name}: "), stderr
    assert words in stderr
