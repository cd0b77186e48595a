"""The request lane on a real waitress server: long-polls wait outside it, so they never hold up
other requests, and they come back in (with their message) while the server is under load.
Plus SQLite's background checkpoints, which keep the write-ahead log from growing."""
import contextlib
import importlib
import importlib.metadata
import inspect
import json
import os
import socket
import sqlite3
import threading
import time

import pytest
import requests
import waitress.server

from server import waitress_internals
from support.helpers import (
    WATCHED_SERVER,
    live_post,
    release_database,
    running_server,
    seed_customers,
    stepped_out,
    wait_until,
)

WAITERS = 3
POLL_WAIT = 25  # the longest a poll may wait; these polls are answered well before it runs out


def post(session, server, path, customer, data, timeout=30):
    email, token = customer
    return live_post(session, server.url, path, email, token, data, timeout=timeout)


def open_chat(server, customer):
    with requests.Session() as session:
        response = post(session, server, "create", customer, {"created_at": 1, "message": "hi"})
    assert response.status_code == 200, response.text
    return response.json()["data"]["chatId"]


def reply_as_agent(server, agent_token, chat_id, text):
    response = requests.post(f"{server.url}/api/agent/chats/{chat_id}/messages", timeout=30,
                             json={"data": {"message": text}},
                             headers={"Authorization": f"Bearer {agent_token}"})
    assert response.status_code == 200, response.text


def start_long_polls(server, customers, chat_ids):
    """One long-poll per chat, each in its own thread: [(thread, result dict)]. Returns once
    every one of them waits (has stepped out of the lane)."""
    polls = []
    for customer, chat_id in zip(customers, chat_ids, strict=True):
        result = {}

        def poll(customer=customer, chat_id=chat_id, result=result):
            started = time.monotonic()
            with requests.Session() as session:
                response = post(session, server, "messages", customer,
                                {"chat_id": chat_id, "after": 1, "wait": POLL_WAIT}, timeout=60)
            result.update(response=response, seconds=time.monotonic() - started)

        thread = threading.Thread(target=poll)
        thread.start()
        polls.append((thread, result))
    wait_until(lambda: len(stepped_out(server)) >= len(polls), what="every long-poll to wait")
    return polls


def join(thread, timeout=60):
    thread.join(timeout)
    assert not thread.is_alive(), f"{thread.name} still runs after {timeout} s"


@pytest.fixture
def lane_server(tmp_path, database_url, app, runner):
    """A server with few threads (WAITERS of them may long-poll), customers and an agent."""
    if not database_url.startswith("sqlite"):
        pytest.skip("the request lane is SQLite's")
    customers = seed_customers(app, WAITERS + 1)
    agent_token = runner.invoke(args=["agents", "add", "ann"]).output.strip().split()[-1]
    release_database()
    env = {"WAITRESS_THREADS": str(WAITERS + 2), "LONGPOLL_MAX_WAITERS": str(WAITERS),
           # Pages as large as the stalled client below asks for (the default bounds them).
           "MAX_POLL_PAGE_BYTES": str(64 * 1024 * 1024)}
    with running_server(tmp_path, database_url, WATCHED_SERVER, env) as server:
        yield server, customers, agent_token


@pytest.mark.slow
def test_waiting_long_polls_do_not_hold_up_other_requests(lane_server):
    server, customers, agent_token = lane_server
    waiters, sender = customers[:WAITERS], customers[WAITERS]
    chat_ids = [open_chat(server, customer) for customer in waiters]
    sender_chat = open_chat(server, sender)

    polls = start_long_polls(server, waiters, chat_ids)
    started = time.monotonic()
    with requests.Session() as session:
        for number in range(50):
            response = post(session, server, "chat", sender,
                            {"chat_id": sender_chat, "message": f"m{number}"})
            assert response.status_code == 200, response.text
    # Had a waiting poll kept the lane, these would have waited out its wait: the polls would
    # be over by now, and the sends would have taken that long.
    assert time.monotonic() - started < POLL_WAIT / 2
    assert all(thread.is_alive() for thread, _ in polls)

    for chat_id in chat_ids:
        reply_as_agent(server, agent_token, chat_id, "here to help")
    for thread, result in polls:
        join(thread)
        assert result["response"].status_code == 200
        assert [m["message"] for m in result["response"].json()["data"]["messages"]] == [
            "here to help"]
        assert result["seconds"] < POLL_WAIT
    assert "Traceback" not in server.log()


@pytest.mark.slow
def test_long_polls_come_back_while_the_server_is_busy(lane_server):
    """Returning polls go ahead of queued requests: under a steady stream of sends they still
    answer soon after their reply, not when the stream stops."""
    server, customers, agent_token = lane_server
    waiters, sender = customers[:WAITERS], customers[WAITERS]
    chat_ids = [open_chat(server, customer) for customer in waiters]
    sender_chat = open_chat(server, sender)
    stop, sent, failures = threading.Event(), [], []

    def keep_sending():
        with requests.Session() as session:
            while not stop.is_set():
                response = post(session, server, "chat", sender,
                                {"chat_id": sender_chat, "message": "busy"})
                (sent if response.status_code == 200 else failures).append(response.text)

    senders = [threading.Thread(target=keep_sending) for _ in range(2)]
    for thread in senders:
        thread.start()
    try:
        polls = start_long_polls(server, waiters, chat_ids)
        replied = time.monotonic()
        for chat_id in chat_ids:
            reply_as_agent(server, agent_token, chat_id, "answer")
        for thread, result in polls:
            join(thread)
            assert result["response"].status_code == 200
            assert result["response"].json()["data"]["messages"][0]["message"] == "answer"
        # The stream of sends goes on until the end of the test: a poll that could only get
        # back in once it stopped would not have answered yet.
        assert time.monotonic() - replied < POLL_WAIT / 2
    finally:
        stop.set()
        for thread in senders:
            join(thread)
    assert failures == [] and len(sent) > 0


@pytest.mark.slow
def test_the_log_is_checkpointed_in_the_background(database_url, make_app):
    """A busy server's write-ahead log is copied back and started over by a thread of its own:
    without it, these sends would take the log past 60 MB."""
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite only")
    app = make_app(RATELIMIT_ENABLED=False)
    path = database_url[len("sqlite:///"):]
    [(email, token)] = seed_customers(app, 1)
    client = app.test_client()

    def send(path, data):
        response = client.post(f"/api/client/live/{path}", json={"data": {"email": email, **data}},
                               headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.json
        return response.json["data"]

    chat_id = send("create", {"created_at": 1, "message": "hi"})["chatId"]
    largest_log = 0
    for _ in range(1500):
        send("chat", {"chat_id": chat_id, "message": "x" * 1000})
        largest_log = max(largest_log, os.path.getsize(path + "-wal"))
    assert largest_log < 30_000_000

    release_database()  # the checkpoint thread too: the file is read directly next
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert raw.execute("SELECT COUNT(*) FROM message").fetchone() == (1501,)


def fill_with_big_messages(server, reader, chat_id):
    """100 messages of 40 KB into the chat; a poll request for all of them (about 4 MB of
    answer), to send without reading its answer."""
    big = "\N{GRINNING FACE}" * 10_000  # 4 bytes each in the JSON answer (UTF-8)
    with requests.Session() as session:
        for _ in range(100):
            body = json.dumps({"data": {"email": reader[0], "chat_id": chat_id, "message": big}},
                              ensure_ascii=False).encode()
            response = session.post(f"{server.url}/api/client/live/chat", data=body, timeout=30,
                                    headers={"Authorization": f"Bearer {reader[1]}",
                                             "Content-Type": "application/json"})
            assert response.status_code == 200, response.text
    poll = json.dumps({"data": {"email": reader[0], "chat_id": chat_id, "limit": 100}}).encode()
    return (b"POST /api/client/live/messages HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/json\r\nAuthorization: Bearer "
            + reader[1].encode() + b"\r\nContent-Length: " + str(len(poll)).encode()
            + b"\r\n\r\n" + poll)


@contextlib.contextmanager
def stalled_client(server, requests_in_a_row):
    """A connection that sends `requests_in_a_row` and reads nothing, once its answer has left
    the request lane to wait for it."""
    with socket.socket() as stalled:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
        stalled.sendall(requests_in_a_row)
        wait_until(lambda: stepped_out(server), what="the stalled answer to leave the lane")
        yield


@pytest.mark.slow
def test_a_client_that_stops_reading_does_not_stop_the_server(lane_server):
    """A client pipelines polls with large answers and reads none: once waitress holds more
    than its high-water mark of unsent output for it, that request waits outside the lane."""
    server, customers, _ = lane_server
    reader, other = customers[0], customers[1]
    chat_id = open_chat(server, reader)
    request = fill_with_big_messages(server, reader, chat_id)
    with stalled_client(server, request * 8):  # about 32 MB of answers, none of them read
        other_chat = open_chat(server, other)  # would wait out waitress's 120 s timeout
        assert other_chat.startswith("chat-")
    assert "Traceback" not in server.log()


@pytest.mark.slow
def test_a_client_that_never_reads_is_cut_off_and_frees_its_thread(tmp_path, database_url, app):
    """The same stalled client against a server with one thread in all: waitress would keep
    that thread waiting for the client for ever; after CHANNEL_TIMEOUT of nothing taken the
    connection is closed and the thread serves the others again."""
    [reader] = seed_customers(app, 1)
    release_database()
    env = {"WAITRESS_THREADS": "1", "LONGPOLL_MAX_WAITERS": "0", "CHANNEL_TIMEOUT": "2",
           "MAX_POLL_PAGE_BYTES": str(64 * 1024 * 1024)}
    with running_server(tmp_path, database_url, WATCHED_SERVER, env) as server:
        chat_id = open_chat(server, reader)
        request = fill_with_big_messages(server, reader, chat_id)
        # The only thread then waits for the client, outside the lane.
        with stalled_client(server, request * 10):  # about 40 MB of answers, none read
            started = time.monotonic()
            assert requests.get(f"{server.url}/healthz", timeout=30).status_code == 200
            assert time.monotonic() - started < 15
        assert "Traceback" not in server.log()


def test_waitress_is_the_release_its_internals_were_checked_against():
    """server/waitress_internals.py copies and overrides pieces of one waitress release: another
    may have changed them without any other test noticing."""
    installed = importlib.metadata.version("waitress")
    assert installed == waitress_internals.VERIFIED_WAITRESS, (
        f"waitress {installed} is installed, but server/waitress_internals.py was checked "
        f"against waitress {waitress_internals.VERIFIED_WAITRESS}: compare each override there "
        "with that release's file and function it names, then update VERIFIED_WAITRESS, "
        "PRIVATE_NAMES and the pin in requirements.txt")


def test_every_private_name_of_waitress_used_still_exists():
    missing = []
    for (module_name, object_name), names in waitress_internals.PRIVATE_NAMES.items():
        module = importlib.import_module(module_name)
        owner = getattr(module, object_name) if object_name else module
        missing += [f"{module_name}.{object_name or ''}.{name}" for name in names
                    if not hasattr(owner, name)]
    assert missing == []
    parameters = inspect.signature(waitress.server.create_server).parameters
    assert {"_dispatcher", "map"} <= set(parameters)
