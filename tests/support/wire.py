"""Talking to a real server on the wire, for the tests of serving and stopping: raw HTTP
requests and answers read byte by byte (to tell a whole answer from a cut one), and socket
states."""
import json
import socket
import threading
import time

import requests

from support.helpers import live_post


def port_of(server):
    return int(server.url.rsplit(":", 1)[1])


def open_chat(server, customer):
    email, token = customer
    with requests.Session() as session:
        response = live_post(session, server.url, "create", email, token,
                             {"created_at": 1, "message": "hi"})
    assert response.status_code == 200, response.text
    return response.json()["data"]["chatId"]


def connectable(host, port):
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        return False
    return True


def in_thread(function, result):
    """`function()` in a thread started now; its outcome goes into `result` ("value" or
    "error"), and when it ended into `result["ended"]`."""

    def run():
        try:
            result["value"] = function()
        except Exception as error:  # reported by the test, not lost in the thread
            result["error"] = error
        result["ended"] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def closed_by_server(sock):
    """The server has closed `sock`: nothing more will ever come (does not block)."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:  # nothing to read, yet open
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.settimeout(timeout)


def chat_request(customer, chat_id, text):
    """A customer's send, as the bytes on the wire (HTTP/1.1, keep-alive)."""
    email, token = customer
    body = json.dumps({"data": {"email": email, "chat_id": chat_id, "message": text}}).encode()
    return (f"POST /api/client/live/chat HTTP/1.1\r\nHost: test\r\n"
            f"Content-Type: application/json\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class CutOff(Exception):
    """The connection closed partway through an answer."""


def receive(sock):
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


def read_answer(sock):
    """One whole answer from `sock`: (status, headers, JSON body); None when the connection
    closed before the answer's first byte; CutOff when it closed partway through."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = receive(sock)
        if not chunk:
            if data:
                raise CutOff(f"in the head: {data!r}")
            return None
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip()
               for name, value in (line.split(":", 1) for line in lines)}
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = receive(sock)
        if not chunk:
            raise CutOff(f"after {len(body)} of {length} body bytes")
        body += chunk
    assert status_line.startswith("HTTP/1.1 ") and len(body) == length, data
    return int(status_line.split()[1]), headers, json.loads(body)
