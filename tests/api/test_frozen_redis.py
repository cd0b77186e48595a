"""A rate-limit store that stops answering (a frozen Redis, a stuck host, a half-open
connection) holds up no request: each call to it has a short timeout, after which the process
counts in memory as when the store refuses connections, and neither the limiter's re-checks nor
/healthz ever wait for a ping."""
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

import settings
from app import create_app
from support.helpers import (
    ROOT,
    expect_one_line,
    live_post,
    redis_url,
    release_database,
    running_server,
    seed_customers,
    wait_until,
)

# A generous bound for an answer that must not wait on the store: the old code waited until
# the store let go (240 s in the issue), and a fake here never lets go while the test runs.
QUICK = 10

LIMITS_ON = {"RATELIMIT_ENABLED": "true", "RATELIMIT_CUSTOMER_SENDS": "100000 per minute",
             "RATELIMIT_CUSTOMER_POLLS": "100000 per minute"}


class SilentStore:
    """A TCP listener that accepts every connection and never answers: a Redis stopped with
    SIGSTOP, as its clients see it."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)  # how often the accepting thread looks at `stopped`
        self.held = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.hold_every_connection, daemon=True)

    def url(self, query="", db=0):
        return f"redis://127.0.0.1:{self.listener.getsockname()[1]}/{db}{query}"

    def hold_every_connection(self):
        while not self.stopped.is_set():
            try:
                self.held.append(self.listener.accept()[0])
            except TimeoutError:
                continue

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stopped.set()
        self.thread.join()
        for connection in [self.listener, *self.held]:
            connection.close()


class DrippingStore(SilentStore):
    """A store that starts every answer and never ends it: one more digit of an integer reply
    every 0.2 s, inside redis-py's 0.5 s read timeout each time."""

    def hold_every_connection(self):
        while not self.stopped.is_set():
            try:
                connection = self.listener.accept()[0]
            except TimeoutError:
                continue
            self.held.append(connection)
            threading.Thread(target=self.drip, args=(connection,), daemon=True).start()

    def drip(self, connection):
        with contextlib.suppress(OSError):
            connection.recv(65536)  # the command
            connection.sendall(b":")
            while not self.stopped.wait(0.2):
                connection.sendall(b"1")


class FreezingProxy(SilentStore):
    """Forwards to the real Redis until `freeze()`; from then on it forwards nothing either way
    (open connections stay open, new ones are accepted and held) until `thaw()`."""

    def __init__(self, upstream):
        super().__init__()
        self.upstream = upstream
        self.thawed = threading.Event()
        self.thawed.set()

    def freeze(self):
        self.thawed.clear()

    def thaw(self):
        self.thawed.set()

    def hold_every_connection(self):
        while not self.stopped.is_set():
            try:
                client = self.listener.accept()[0]
            except TimeoutError:
                continue
            server = socket.create_connection(self.upstream)
            self.held += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self.pump, args=(source, target), daemon=True).start()

    def pump(self, source, target):
        source.settimeout(0.05)  # how often the pump looks at `stopped`
        while not self.stopped.is_set():
            try:
                data = source.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            # Whatever comes while frozen waits here, as it would in a stopped Redis.
            while not self.thawed.wait(0.05):
                if self.stopped.is_set():
                    return
            if not data:
                target.close()
                return
            try:
                target.sendall(data)
            except OSError:
                return


def health(server):
    response = requests.get(f"{server.url}/healthz", timeout=QUICK)
    assert response.status_code == 200, response.text
    return response.json()["data"]["rate_limits"]


def timed(call):
    """`call()`'s answer and the seconds it took."""
    started = time.monotonic()
    answer = call()
    return answer, time.monotonic() - started


class Customer:
    """One seeded customer talking to a real server, every call with the QUICK timeout."""

    def __init__(self, server, customer):
        self.server, (self.email, self.token) = server, customer
        self.session = requests.Session()

    def post(self, path, data):
        response = live_post(self.session, self.server.url, path, self.email, self.token, data,
                             timeout=QUICK)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    def create(self):
        return self.post("create", {"created_at": 1679223400, "message": "Hello"})["chatId"]

    def send(self, chat_id):
        return self.post("chat", {"chat_id": chat_id, "message": "Still there?"})


def limited_server(tmp_path, database_url, store_url):
    return running_server(tmp_path, database_url,
                          env={**LIMITS_ON, "RATELIMIT_STORAGE_URI": store_url})


@pytest.mark.slow
def test_a_store_that_never_answers_holds_up_no_request(tmp_path, database_url, app):
    seeded = seed_customers(app, 1)
    release_database()
    with SilentStore() as store, limited_server(tmp_path, database_url, store.url()) as server:
        wait_until(lambda: health(server) == "memory fallback", what="the first ping")
        customer = Customer(server, seeded[0])
        chat_id = customer.create()  # waits for the store once, the default 0.5 s
        for _ in range(5):
            customer.send(chat_id)
        for path in ("/api/openapi.json", "/inbox"):
            assert requests.get(f"{server.url}{path}", timeout=QUICK).status_code == 200
        assert health(server) == "memory fallback"
        log = server.log()
    assert "falling back to in-memory storage" in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_a_store_that_drips_an_endless_answer_holds_up_no_request(tmp_path, database_url, app):
    """Each read of the answer comes within the socket timeout, the answer never ends: the
    call's own deadline (the two timeouts, 1 s) cuts it, and the limits count in memory."""
    seeded = seed_customers(app, 1)
    release_database()
    with DrippingStore() as store, limited_server(tmp_path, database_url, store.url()) as server:
        customer = Customer(server, seeded[0])
        chat_id, waited = timed(customer.create)
        assert waited < QUICK
        wait_until(lambda: health(server) == "memory fallback", what="the watch's verdict")
        for _ in range(5):
            _, took = timed(lambda: customer.send(chat_id))
            assert took < QUICK / 2
        log = server.log()
    assert "falling back to in-memory storage" in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_the_url_s_timeout_is_honoured_and_no_request_waits_for_a_ping(tmp_path, database_url,
                                                                       app):
    """A 4 s timeout from the URL: the request that finds the store frozen waits that long
    (not the default), and no later one waits for flask-limiter's re-check of the store."""
    seeded = seed_customers(app, 1)
    release_database()
    store_wait = 4
    with SilentStore() as store, limited_server(
            tmp_path, database_url,
            store.url(f"?socket_timeout={store_wait}&socket_connect_timeout={store_wait}")
    ) as server:
        wait_until(lambda: health(server) == "memory fallback", what="the first ping")
        customer = Customer(server, seeded[0])
        chat_id, waited = timed(customer.create)
        assert store_wait - 0.5 <= waited < QUICK
        # flask-limiter asks a store it found down again 1, 2, 4... s later, on a request:
        # that must be answered without a ping, which would wait `store_wait`.
        fell_back = time.monotonic()
        while time.monotonic() - fell_back < 3:
            _, took = timed(lambda: customer.send(chat_id))
            assert took < store_wait - 1
            _, took = timed(lambda: health(server))  # nor /healthz for its ping
            assert took < store_wait - 1
        log = server.log()
    assert "falling back to in-memory storage" in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_a_store_that_freezes_after_answering_then_comes_back(tmp_path, database_url, app):
    redis_url()  # skips without the real Redis; never stopped itself: others share it
    seeded = seed_customers(app, 1)
    release_database()
    with FreezingProxy(("127.0.0.1", 6379)) as proxy, limited_server(
            tmp_path, database_url, proxy.url(db=15)) as server:
        customer = Customer(server, seeded[0])
        chat_id = customer.create()
        assert health(server) == "ok"
        # Serving a while first, as a server does in production: flask-limiter then asks the
        # store again as soon as it finds it down, at the time the last ping still said yes.
        serving = time.monotonic()
        while time.monotonic() - serving < 1.5:
            customer.send(chat_id)

        proxy.freeze()
        customer.send(chat_id)  # finds it frozen: waits the default timeout, then memory
        assert health(server) == "memory fallback"
        for _ in range(5):
            customer.send(chat_id)

        proxy.thaw()

        def counted_in_the_store_again():
            customer.post("list", {})  # a limited request: flask-limiter re-checks on these
            return health(server) == "ok"

        wait_until(counted_in_the_store_again, timeout=60)
        log = server.log()
    # Once each: a ping answered just before the freeze does not bring the store back.
    assert log.count("falling back to in-memory storage") == 1
    assert log.count("Rate limit storage recovered") == 1
    assert "Traceback" not in log


BAD_TIMEOUTS = ["socket_timeout=0", "socket_timeout=-1", "socket_timeout=abc",
                "socket_timeout=nan", "socket_timeout=inf", "socket_timeout=",
                "socket_timeout=1e9", "socket_timeout=6", "socket_connect_timeout=0",
                "socket_timeout=1&socket_timeout=0"]
REDIS_SCHEMES = ["redis://127.0.0.1:6379/0", "rediss://127.0.0.1:6379/0",
                 "redis+unix:///run/redis.sock", "redis+sentinel://127.0.0.1:26379/mymaster",
                 "redis+cluster://127.0.0.1:7000"]


@pytest.mark.parametrize("uri", [f"{REDIS_SCHEMES[0]}?{query}" for query in BAD_TIMEOUTS]
                         + [f"{uri}?socket_timeout=0" for uri in REDIS_SCHEMES[1:]])
def test_a_bad_timeout_in_the_url_is_refused_in_one_line(monkeypatch, capsys, uri):
    monkeypatch.setenv("RATELIMIT_STORAGE_URI", uri)
    with pytest.raises(SystemExit) as stopped:
        create_app({"TESTING": True})
    assert stopped.value.code == 2
    expect_one_line(capsys.readouterr().err, "RATELIMIT_STORAGE_URI",
                    f"the URL's {uri.split('?')[1].split('=')[0]}: ")


@pytest.mark.parametrize("query", ["timeout=100", "sockettimeout=1", "decode_responses=true",
                                   "db=0&socket_timeout=1&retry=3"])
def test_an_option_redis_does_not_know_is_refused_in_one_line(monkeypatch, capsys, query):
    """A misspelt option reached every connection, which then failed each call: the shared
    store was silently never used."""
    monkeypatch.setenv("RATELIMIT_STORAGE_URI", f"redis://127.0.0.1:6379/0?{query}")
    with pytest.raises(SystemExit) as stopped:
        create_app({"TESTING": True})
    assert stopped.value.code == 2
    expect_one_line(capsys.readouterr().err, "RATELIMIT_STORAGE_URI",
                    "is not a Redis connection option")


def test_the_known_options_are_taken(monkeypatch):
    monkeypatch.setenv("RATELIMIT_STORAGE_URI", "redis://127.0.0.1:6379/0?db=0&"
                       "health_check_interval=10&socket_keepalive=true&client_name=sz")
    assert create_app({"TESTING": True}).config["RATELIMIT_STORAGE_URI"].endswith("client_name=sz")


@pytest.mark.slow
def test_python_app_py_refuses_a_bad_timeout_in_the_url(tmp_path):
    environment = {"DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}", "HOST": "127.0.0.1",
                   "PORT": "0", "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/0?"
                                                         "socket_timeout=0"}
    # A launcher that accepted the value would serve until the timeout and fail the test.
    done = subprocess.run([sys.executable, "app.py"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **environment}, timeout=60)
    assert done.returncode == 2, done.stderr
    expect_one_line(done.stderr, "RATELIMIT_STORAGE_URI", "socket_timeout")


@pytest.mark.parametrize("uri, expected", [
    ("redis://127.0.0.1:6379/0", {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}),
    ("valkeys://127.0.0.1:6379/0?socket_timeout=2",
     {"socket_timeout": 2.0, "socket_connect_timeout": 0.5}),
    ("redis+sentinel://127.0.0.1:26379/mymaster?socket_connect_timeout=1.5",
     {"socket_timeout": 0.5, "socket_connect_timeout": 1.5,
      "sentinel_kwargs": {"socket_timeout": 0.5, "socket_connect_timeout": 1.5}}),
    ("memory://", {}),
])
def test_every_redis_scheme_gets_short_timeouts_the_url_can_change(uri, expected):
    assert {name: value for name, value in settings.storage_options(uri).items()
            if name != "retry"} == expected
