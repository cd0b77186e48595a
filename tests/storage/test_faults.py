"""Faults: the server killed mid-load, the database going away and coming back."""
import glob
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading

import pytest
import requests

import models
from support.helpers import free_port, release_database, running_server, seed_customers, wait_until
from support.wire import open_chat

pytestmark = pytest.mark.slow

THREADS = 16


class Senders:
    """Threads that send messages with Idempotency-Keys until told to stop or cut off."""

    def __init__(self, server_url, customers, chats):
        self.url, self.customers, self.chats = server_url, customers, chats
        self.acknowledged = {}  # key -> (thread, body, messageId)
        self.attempted = {}  # key -> (thread, body)
        self.failures = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(n,)) for n in range(THREADS)]

    def request(self, session, thread, key, body):
        email, token = self.customers[thread % len(self.customers)]
        return session.post(f"{self.url}/api/client/live/chat", timeout=30, json={
            "data": {"chat_id": self.chats[thread % len(self.chats)], "email": email,
                     "message": body}},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key})

    def run(self, thread):
        with requests.Session() as session:
            number = 0
            while not self.stop.is_set():
                key, body = f"t{thread}-m{number}", f"thread {thread} message {number}"
                self.attempted[key] = (thread, body)
                try:
                    response = self.request(session, thread, key, body)
                except requests.RequestException:
                    return  # the server is gone
                if response.status_code == 200:
                    self.acknowledged[key] = (thread, body, response.json()["data"]["messageId"])
                else:
                    self.failures.append((response.status_code, response.text))
                number += 1

    def start(self):
        for thread in self.threads:
            thread.start()

    def join(self):
        self.stop.set()
        for thread in self.threads:
            thread.join()


def test_sigkill_mid_load_loses_nothing_acknowledged(tmp_path, make_app):
    path = tmp_path / "crash.db"
    url = f"sqlite:///{path}"
    customers = seed_customers(make_app(DATABASE_URL=url), 4)
    release_database()

    with running_server(tmp_path, url) as server:
        chats = [open_chat(server, customer) for customer in customers]
        senders = Senders(server.url, customers, chats)
        senders.start()
        wait_until(lambda: len(senders.acknowledged) >= 200, timeout=120,
                   what="200 acknowledged sends")
        server.process.kill()  # SIGKILL: no shutdown, no checkpoint
        server.process.wait()
        senders.join()
    assert senders.failures == []
    acknowledged = dict(senders.acknowledged)

    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {row[0] for row in connection.execute("SELECT public_id FROM message")}
        assert {message_id for _, _, message_id in acknowledged.values()} <= stored
        for chat_id, last_seq in connection.execute("SELECT id, last_seq FROM chat"):
            seqs = [row[0] for row in connection.execute(
                "SELECT seq FROM message WHERE chat_id = ? ORDER BY seq", (chat_id,))]
            assert seqs == list(range(1, last_seq + 1))

    with running_server(tmp_path, url) as server:
        retry = Senders(server.url, customers, chats)
        with requests.Session() as session:
            # A retry of an acknowledged send answers with the original id, storing nothing.
            for key, (thread, body, message_id) in list(acknowledged.items())[:40]:
                response = retry.request(session, thread, key, body)
                assert response.status_code == 200
                assert response.json()["data"]["messageId"] == message_id
                assert response.headers["Idempotent-Replayed"] == "true"
            # A retry of a send cut off by the crash is stored at most once.
            for key, (thread, body) in senders.attempted.items():
                if key not in acknowledged:
                    assert retry.request(session, thread, key, body).status_code == 200
    with sqlite3.connect(path) as connection:
        bodies = [row[0] for row in connection.execute(
            "SELECT body FROM message WHERE seq > 1")]  # (seq 1: each chat's first)
        assert len(bodies) == len(set(bodies))


@pytest.fixture
def own_postgres():
    """A PostgreSQL server of the test's own, to stop and start at will."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not binaries or os.geteuid() != 0:
        pytest.skip("needs PostgreSQL's server binaries and root (as on CI)")
    bin_dir = os.path.dirname(binaries[-1])
    home = tempfile.mkdtemp(prefix="supportzen-pg-")
    shutil.chown(home, "postgres")
    port = free_port()
    data = os.path.join(home, "data")

    def as_postgres(*command):
        subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True,
                       capture_output=True)

    def start():
        as_postgres(f"{bin_dir}/pg_ctl", "-D", data, "-w", "-l", f"{home}/log", "-o",
                    f"-p {port} -k {home} -c listen_addresses=127.0.0.1", "start")

    def stop():
        as_postgres(f"{bin_dir}/pg_ctl", "-D", data, "-w", "-m", "fast", "stop")

    as_postgres(f"{bin_dir}/initdb", "-D", data, "-A", "trust", "-U", "postgres")
    start()
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", start, stop
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", f"{bin_dir}/pg_ctl", "-D", data,
                        "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.skipif(not os.environ.get("TEST_DATABASE_URL"),
                    reason="a PostgreSQL fault: runs in the PostgreSQL pass of the suite")
def test_postgres_down_then_up_answers_503_and_recovers(tmp_path, own_postgres, make_app):
    url, start, stop = own_postgres
    customers = seed_customers(make_app(DATABASE_URL=url), 1)
    release_database()
    email, token = customers[0]

    def send(session, text):
        return session.post(f"{server.url}/api/client/live/chat", timeout=15, json={
            "data": {"chat_id": chat_id, "email": email, "message": text}},
            headers={"Authorization": f"Bearer {token}"})

    with running_server(tmp_path, url) as server, requests.Session() as session:
        [chat_id] = [open_chat(server, customer) for customer in customers]
        acknowledged = []

        def send_some(thread):  # concurrent load leaves several connections in the pool
            with requests.Session() as own:
                for number in range(5):
                    response = send(own, f"before {thread}-{number}")
                    acknowledged.append(response.json()["data"]["messageId"])

        threads = [threading.Thread(target=send_some, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(acknowledged) == 40

        stop()
        for number in range(5):
            response = send(session, f"while down {number}")
            assert response.status_code == 503
            body = response.json()
            assert body["status"] == "error" and body["data"] is None
            assert body["error"]["code"] == "database_unavailable"
            assert response.headers["Retry-After"] == "1"
        assert requests.get(f"{server.url}/healthz", timeout=15).status_code == 503

        start()
        for number in range(10):  # from the very first request after the restart on
            response = send(session, f"after {number}")
            assert response.status_code == 200, response.text
            acknowledged.append(response.json()["data"]["messageId"])
        assert "Traceback" not in server.log()

    models.configure_database(url)
    stored = {m.public_id for m in models.Message.select()}
    assert set(acknowledged) <= stored
    seqs = [m.seq for m in models.Message.select().order_by(models.Message.seq)]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) == 51
    models.database.close_all()
