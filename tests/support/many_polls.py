"""Hundreds of connections to a real server from one thread: long-polls left waiting on raw
sockets, and connections that only sit there. Threads would cost the test more than the server.
"""
import json
import selectors
import socket
import time
from urllib.parse import urlsplit

import requests

from support.helpers import seed_customers, wait_until


def raise_open_files_limit():
    """As many open files as the hard limit allows (the soft limit is often 1,024)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Answer:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body
        self.arrived = time.monotonic()

    def json(self):
        return json.loads(self.body)


class RawPolls:
    """Connections to `base_url`, each sending at most one request; `pump` collects answers."""

    def __init__(self, base_url):
        parts = urlsplit(base_url)
        self.address = (parts.hostname, parts.port)
        self.selector = selectors.DefaultSelector()
        self.sockets = []
        self.received = {}  # key -> bytes so far
        self.answers = {}  # key -> Answer
        self.sent = {}  # key -> when its request was sent (monotonic seconds)

    def connect(self):
        sock = socket.create_connection(self.address, timeout=10)
        sock.setblocking(False)
        self.sockets.append(sock)
        return sock

    def idle(self, count):
        """Connections that send nothing."""
        for _ in range(count):
            self.connect()

    def post(self, key, path, data, token):
        body = json.dumps({"data": data}).encode()
        self._send(key, "POST", path, token, body)

    def get(self, key, path, token):
        self._send(key, "GET", path, token, b"")

    def _send(self, key, method, path, token, body):
        sock = self.connect()
        head = (f"{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        sock.setblocking(True)
        sock.sendall(head.encode() + body)
        sock.setblocking(False)
        self.sent[key] = time.monotonic()
        self.received[key] = b""
        self.selector.register(sock, selectors.EVENT_READ, key)

    def pump(self, seconds):
        """Read what arrives for `seconds`; the answers complete so far, by key."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for selected, _ in self.selector.select(max(0.0, deadline - time.monotonic())):
                self._read(selected.fileobj, selected.data)
        return self.answers

    def collect(self):
        """The answers complete so far, after reading what has already arrived (without
        waiting for more)."""
        while ready := self.selector.select(0):
            for selected, _ in ready:
                self._read(selected.fileobj, selected.data)
        return self.answers

    def wait_for(self, keys, timeout=30):
        """Pump until every key in `keys` has its answer; the answers."""
        deadline = time.monotonic() + timeout
        while not set(keys) <= set(self.answers) and time.monotonic() < deadline:
            self.pump(min(0.2, deadline - time.monotonic()))
        missing = set(keys) - set(self.answers)
        assert not missing, f"no answer within {timeout} s for {sorted(missing)[:5]}"
        return {key: self.answers[key] for key in keys}

    def _read(self, sock, key):
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        if not data:
            self.selector.unregister(sock)
            return
        self.received[key] += data
        answer = parse(self.received[key])
        if answer is not None:
            self.answers[key] = answer
            self.selector.unregister(sock)

    def close(self):
        for sock in self.sockets:
            sock.close()
        self.selector.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def parse(data):
    """The HTTP answer in `data`, or None while it is incomplete."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if len(body) < int(headers.get("content-length", 0)):
        return None
    return Answer(int(lines[0].split()[1]), headers, body)


# --- waiting customer polls on a real server ---------------------------------------------

POLL = "/api/client/live/messages"
WAIT = 25


def open_chats(app, count, prefix="waiting"):
    """`count` customers with one open chat each (one message): [(email, token, chat id)]."""
    client = app.test_client()
    chats = []
    for email, token in seed_customers(app, count, prefix):
        answer = client.post("/api/client/live/create",
                             headers={"Authorization": f"Bearer {token}"},
                             json={"data": {"email": email, "created_at": 1, "message": "hi"}})
        chats.append((email, token, answer.json["data"]["chatId"]))
    return chats


def poll_data(email, chat_id, after=1, wait=WAIT):
    return {"email": email, "chat_id": chat_id, "after": after, "wait": wait}


def poll_each(polls, chats):
    """A waiting customer poll on each chat, keyed by its index."""
    for number, (email, token, chat_id) in enumerate(chats):
        polls.post(number, POLL, poll_data(email, chat_id), token)


def long_polls(server):
    return requests.get(f"{server.url}/healthz", timeout=10).json()["data"]["long_polls"]


def answered_in_time(polls, keys, wait=WAIT):
    """The answers of `keys`, once each has come, every one of them before its poll's `wait`
    could run out: woken (or turned away), not timed out. (A poll that waits its time out
    reads once more and answers the same page, so the time is what tells them apart; the
    deadline for the answers is generous, and it is no part of the check.)"""
    answers = polls.wait_for(keys, timeout=wait + 30)
    late = {key: round(answer.arrived - polls.sent[key], 1) for key, answer in answers.items()
            if answer.arrived - polls.sent[key] >= wait}
    assert not late, f"answered only when their {wait} s wait ran out (seconds): {late}"
    return answers


def wait_for_waiting(server, count, timeout=60):
    """Until the server's /healthz counts `count` polls waiting."""
    wait_until(lambda: long_polls(server)["waiting"] == count, timeout,
               what=lambda: f"{count} polls to wait: {long_polls(server)}")
