"""Many waiting long-polls on a real server: more than 1,024 connections on one process, a
change wakes exactly the polls of its chat (here or through another process), polls beyond
LONGPOLL_MAX_WAITERS answer at once with a hint, and the cursor still never skips or repeats.

The server's /healthz counts its waiting polls and how many a change has woken: the state these
tests wait on and check.
"""
import datetime
import json
import os
import signal
import socket
import threading
import time

import pytest
import requests

import models
from support.helpers import new_agent, release_database, running_server
from support.many_polls import (
    POLL,
    WAIT,
    RawPolls,
    long_polls,
    open_chats,
    parse,
    poll_data,
    poll_each,
    raise_open_files_limit,
    wait_for_waiting,
)

pytestmark = pytest.mark.slow
needs_postgres = pytest.mark.skipif(not os.environ.get("TEST_DATABASE_URL"),
                                    reason="runs in the PostgreSQL pass")

def send(server, email, token, chat_id, message):
    answer = requests.post(f"{server.url}/api/client/live/chat", timeout=30,
                           headers={"Authorization": f"Bearer {token}"},
                           json={"data": {"email": email, "chat_id": chat_id,
                                          "message": message}})
    assert answer.status_code == 200, answer.text
    return time.monotonic()


def texts(answer):
    return [message["message"] for message in answer.json()["data"]["messages"]]


def test_more_than_1024_connections_are_served_on_one_process(tmp_path, database_url, app):
    waiters, idle = 300, 760  # 1,060 connections open at once
    if raise_open_files_limit() < waiters + idle + 200:
        pytest.skip("this machine's open-file limit is too low for the test itself")
    chats = open_chats(app, waiters)
    release_database()
    with running_server(tmp_path, database_url,
                        env={"LONGPOLL_MAX_WAITERS": str(waiters)}) as server, \
            RawPolls(server.url) as polls:
        poll_each(polls, chats)
        polls.idle(idle)
        wait_for_waiting(server, waiters)
        assert polls.pump(0.5) == {}  # every poll still waits

        # New requests are answered at once beside them...
        started = time.monotonic()
        assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
        assert time.monotonic() - started < 1
        # ...and each waiting poll answers its own chat's message.
        woken = range(0, waiters, 25)
        for number in woken:
            email, token, chat_id = chats[number]
            send(server, email, token, chat_id, f"for poll {number}")
        answers = polls.wait_for(woken, timeout=10)
        for number, answer in answers.items():
            assert answer.status == 200 and texts(answer) == [f"for poll {number}"]
        polls.pump(0.3)
        assert set(polls.answers) == set(woken)  # no other poll answered
        assert long_polls(server)["waiting"] == waiters - len(woken)


def test_a_change_wakes_exactly_the_polls_of_its_chat(tmp_path, database_url, app):
    chats = open_chats(app, 20)
    agent = new_agent(app, "alice")
    release_database()
    with running_server(tmp_path, database_url) as server, RawPolls(server.url) as polls:
        poll_each(polls, chats)
        polls.get("agent", f"/api/agent/chats/{chats[0][2]}/messages?after=1&wait={WAIT}",
                  agent.token)
        wait_for_waiting(server, 21)
        woken_before = long_polls(server)["woken"]

        # A customer's message: its own poll and the agent's poll on that chat.
        email, token, chat_id = chats[0]
        send(server, email, token, chat_id, "only chat 0")
        answers = polls.wait_for([0, "agent"], timeout=10)
        assert texts(answers[0]) == texts(answers["agent"]) == ["only chat 0"]
        wait_for_waiting(server, 19)
        assert long_polls(server)["woken"] == woken_before + 2  # no other poll was woken

        # A poll for what comes after seq 3: the message that is seq 3 wakes it (it reads,
        # finds nothing for it, and waits on). On SQLite the watcher also sees this
        # process's own commit: it must not wake the poll a second time for it.
        polls.post("later", POLL, poll_data(email, chat_id, after=3), token)
        wait_for_waiting(server, 20)
        send(server, email, token, chat_id, "seq 3")
        polls.pump(0.5)  # five turns of the SQLite watcher
        assert "later" not in polls.answers
        assert long_polls(server)["woken"] == woken_before + 3
        woken_before += 1

        # An agent's reply and a close: one poll each.
        reply = requests.post(f"{server.url}/api/agent/chats/{chats[5][2]}/messages",
                              json={"data": {"message": "for chat 5"}}, timeout=30,
                              headers={"Authorization": f"Bearer {agent.token}"})
        assert reply.status_code == 200
        closed = requests.post(f"{server.url}/api/agent/chats/{chats[7][2]}/close",
                               timeout=30, headers={"Authorization": f"Bearer {agent.token}"})
        assert closed.status_code == 200
        answers = polls.wait_for([5, 7], timeout=10)
        assert texts(answers[5]) == ["for chat 5"]
        assert answers[7].json()["data"]["status"] == "closed"
        polls.pump(0.3)
        assert set(polls.answers) == {0, "agent", 5, 7}
        assert long_polls(server)["woken"] == woken_before + 4
        assert long_polls(server)["waiting"] == 18


def test_polls_beyond_the_waiter_cap_answer_at_once_with_a_hint(tmp_path, database_url, app):
    chats = open_chats(app, 6)
    release_database()
    with running_server(tmp_path, database_url, env={"LONGPOLL_MAX_WAITERS": "5"}) as server, \
            RawPolls(server.url) as polls:
        poll_each(polls, chats[:5])
        wait_for_waiting(server, 5)
        email, token, chat_id = chats[5]
        started = time.monotonic()
        answer = requests.post(f"{server.url}{POLL}", timeout=30,
                               headers={"Authorization": f"Bearer {token}"},
                               json={"data": poll_data(email, chat_id)})
        assert time.monotonic() - started < 2
        assert answer.status_code == 200
        page = answer.json()["data"]
        assert page["messages"] == [] and page["next_after"] == 1
        assert 2 <= page["retry_after"] <= 6
        assert answer.headers["Retry-After"] == str(page["retry_after"])
        assert long_polls(server) | {"woken": 0} == {"waiting": 5, "capacity": 5,
                                                      "woken": 0}


def poll_through(server, email, token, chat_id, after=1, wait=20):
    return requests.post(f"{server.url}{POLL}", timeout=60,
                         headers={"Authorization": f"Bearer {token}"},
                         json={"data": poll_data(email, chat_id, after, wait)})


def wakes_across_processes(one, two, customer, delay_limit):
    """A poll waiting on `two` answers a message sent through `one` within `delay_limit`
    seconds of its acknowledgement; the same for a close."""
    email, token, chat_id = customer
    for after, change in ((1, "message"), (2, "close")):
        result = {}

        def wait_on_two(after=after, result=result):
            result["answer"] = poll_through(two, email, token, chat_id, after)
            result["at"] = time.monotonic()

        poller = threading.Thread(target=wait_on_two)
        poller.start()
        try:
            wait_for_waiting(two, 1)
            if change == "message":
                acknowledged = send(one, email, token, chat_id, "across")
            else:
                closed = requests.post(f"{one.url}/api/client/live/close", timeout=30,
                                       headers={"Authorization": f"Bearer {token}"},
                                       json={"data": {"email": email, "chat_id": chat_id}})
                assert closed.status_code == 200
                acknowledged = time.monotonic()
        finally:
            poller.join(60)
        page = result["answer"].json()["data"]
        if change == "message":
            assert [m["message"] for m in page["messages"]] == ["across"]
        else:
            assert page["status"] == "closed"
        # Its wait was 20 s, and nothing re-reads periodically: the watcher woke it.
        assert result["at"] - acknowledged < delay_limit


@needs_postgres
def test_a_poll_on_one_postgres_instance_wakes_on_a_change_through_another(
        tmp_path, database_url, app):
    customer = open_chats(app, 1)[0]
    release_database()
    with running_server(tmp_path, database_url) as one, \
            running_server(tmp_path, database_url) as two:
        woken = long_polls(two)["woken"]
        wakes_across_processes(one, two, customer, delay_limit=1.0)
        assert long_polls(two)["woken"] == woken + 2  # NOTIFY, once per change


def test_a_poll_on_sqlite_wakes_on_a_change_by_another_process(tmp_path, database_url, app):
    """Also with a chat stamped years ahead (a clock stepped back, data copied from a machine
    whose clock ran fast): the watcher must not wait for that time to come."""
    if not database_url.startswith("sqlite"):
        pytest.skip("the SQLite watcher; PostgreSQL has its own test")
    customer, ahead = open_chats(app, 2)
    with app.app_context():
        models.Chat.update(updated_at=datetime.datetime(2030, 1, 1)).where(
            models.Chat.public_id == ahead[2]).execute()
    release_database()
    with running_server(tmp_path, database_url) as one, \
            running_server(tmp_path, database_url) as two:
        wakes_across_processes(one, two, customer, delay_limit=1.0)


def test_the_cursor_never_skips_or_repeats_while_polls_wait(tmp_path, database_url, app):
    """4 writers send 25 messages each into one chat while 2 readers follow it with waiting
    polls of 7 messages at most: each reader sees 2, 3, ..., 101 once each, in order."""
    email, token, chat_id = open_chats(app, 1)[0]
    release_database()
    total = 101
    with running_server(tmp_path, database_url) as server:
        seen = {reader: [] for reader in range(2)}
        failures = []

        def write(writer):
            for number in range(25):
                send(server, email, token, chat_id, f"{writer}-{number}")

        def follow(reader):
            after = 1
            deadline = time.monotonic() + 120
            while after < total and time.monotonic() < deadline:
                answer = requests.post(f"{server.url}{POLL}", timeout=60,
                                       headers={"Authorization": f"Bearer {token}"},
                                       json={"data": {**poll_data(email, chat_id, after, 5),
                                                      "limit": 7}})
                if answer.status_code != 200:
                    failures.append(answer.text)
                    return
                page = answer.json()["data"]
                seen[reader] += [message["seq"] for message in page["messages"]]
                after = page["next_after"]

        threads = [threading.Thread(target=follow, args=(n,)) for n in range(2)]
        threads += [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        assert failures == []
        for seqs in seen.values():
            assert seqs == list(range(2, total + 1))


def test_sigterm_answers_hundreds_of_waiting_polls_at_once(tmp_path, database_url, app):
    """They answer with nothing new, without a database read each: 300 reads at once would
    queue for a pool of 4 connections instead of answering."""
    waiters = 300
    raise_open_files_limit()
    chats = open_chats(app, waiters)
    release_database()
    env = {"LONGPOLL_MAX_WAITERS": str(waiters), "DB_POOL_SIZE": "4"}
    with running_server(tmp_path, database_url, env=env) as server:
        with RawPolls(server.url) as polls:
            poll_each(polls, chats)
            wait_for_waiting(server, waiters)
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            answers = polls.wait_for(range(waiters), timeout=20)
            assert server.process.wait(20) == 0
        for answer in answers.values():
            assert answer.status == 200 and answer.json()["data"]["messages"] == []
        assert max(answer.arrived for answer in answers.values()) - signalled < 5
        log = server.log()
        assert "every request in flight is answered: stopping" in log
        assert "Traceback" not in log and "unexpected error" not in log


def test_a_connection_stays_open_after_a_poll_that_waited_past_the_header_timeout(
        tmp_path, database_url, app):
    """The deadline of a request's head ends when the request has arrived: a poll that waited
    3 s on a connection with HEADER_TIMEOUT=1 leaves it open for the next request."""
    email, token, chat_id = open_chats(app, 1)[0]
    release_database()
    body = json.dumps({"data": poll_data(email, chat_id, wait=3)}).encode()
    request = (f"POST {POLL} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body
    with running_server(tmp_path, database_url, env={"HEADER_TIMEOUT": "1"}) as server, \
            socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])),
                                     timeout=30) as connection:
        for _ in range(3):  # one connection, kept alive throughout
            started = time.monotonic()
            connection.sendall(request)
            received = b""
            while (answer := parse(received)) is None:
                chunk = connection.recv(65536)
                assert chunk, "the server closed the connection"
                received += chunk
            assert answer.status == 200 and time.monotonic() - started >= 2.9


def test_sigterm_answers_requests_still_in_the_accept_backlog(tmp_path, database_url, app):
    """Clients that connected and sent their poll just before the signal are answered, not
    reset: the server takes in its backlog before it stops listening."""
    clients = 200
    raise_open_files_limit()
    chats = open_chats(app, clients)
    release_database()
    with running_server(tmp_path, database_url) as server, RawPolls(server.url) as polls:
        poll_each(polls, chats)
        server.process.send_signal(signal.SIGTERM)
        answers = polls.wait_for(range(clients), timeout=30)
        assert server.process.wait(30) == 0
    assert sorted(answer.status for answer in answers.values()) == [200] * clients


def test_a_body_far_past_the_limit_is_refused_before_it_is_read(tmp_path, database_url, app):
    """MAX_CONTENT_LENGTH (64 KiB) answers 413 in JSON; far past it (64 KiB more) waitress
    stops reading at once rather than take the body to a temporary file first."""
    email, token, chat_id = open_chats(app, 1)[0]
    release_database()
    with running_server(tmp_path, database_url) as server:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        over = requests.post(f"{server.url}/api/client/live/chat", timeout=30,
                             headers=headers, data=b"x" * (100 * 1024))
        assert over.status_code == 413 and over.json()["error"]["code"] == "payload_too_large"
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            connection.sendall(b"POST /api/client/live/chat HTTP/1.1\r\nHost: test\r\n"
                               b"Content-Type: application/json\r\n"
                               b"Content-Length: 1000000000\r\n\r\n" + b"x" * 1024)
            answer = connection.recv(65536)  # at once: it does not wait for the gigabyte
        assert answer.startswith(b"HTTP/1.1 413 ")


def test_a_close_and_a_reopen_one_after_the_other_end_the_wait(tmp_path, database_url, app):
    """The poll may read the chat only once it is open again: it must answer all the same
    (with the status it reads), not sleep through both changes."""
    chats = open_chats(app, 20)
    agent = new_agent(app, "alice")
    release_database()
    with running_server(tmp_path, database_url) as server, RawPolls(server.url) as polls:
        poll_each(polls, chats)
        wait_for_waiting(server, len(chats))
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            requests_in_a_row = b"".join(
                f"POST /api/agent/chats/{chat_id}/{action} HTTP/1.1\r\nHost: test\r\n"
                f"Authorization: Bearer {agent.token}\r\nContent-Length: 0\r\n\r\n".encode()
                for _, _, chat_id in chats for action in ("close", "reopen"))
            connection.sendall(requests_in_a_row)  # pipelined: back to back
            answers = polls.wait_for(range(len(chats)), timeout=5)
    for answer in answers.values():
        assert answer.status == 200 and answer.json()["data"]["messages"] == []
        assert answer.json()["data"]["status"] in ("open", "closed")


@needs_postgres
def test_a_close_and_a_reopen_through_another_instance_end_the_wait(
        tmp_path, database_url, app):
    email, token, chat_id = open_chats(app, 1)[0]
    agent = new_agent(app, "alice")
    release_database()
    with running_server(tmp_path, database_url) as one, \
            running_server(tmp_path, database_url) as two, RawPolls(two.url) as polls:
        polls.post("poll", POLL, poll_data(email, chat_id), token)
        wait_for_waiting(two, 1)
        for action in ("close", "reopen"):
            answer = requests.post(f"{one.url}/api/agent/chats/{chat_id}/{action}",
                                   timeout=30,
                                   headers={"Authorization": f"Bearer {agent.token}"})
            assert answer.status_code == 200
        answer = polls.wait_for(["poll"], timeout=2)["poll"]  # its wait was 25 s
    # Closed or open again, as the poll read it: what matters is that it answered at once.
    assert answer.status == 200 and answer.json()["data"]["status"] in ("open", "closed")
