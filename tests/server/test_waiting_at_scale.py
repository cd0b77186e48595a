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
from support.helpers import live_post, new_agent, release_database, running_server, wait_until
from support.many_polls import (
    POLL,
    WAIT,
    RawPolls,
    answered_in_time,
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
    answer = live_post(requests, server.url, "chat", email, token,
                       {"chat_id": chat_id, "message": message})
    assert answer.status_code == 200, answer.text
    return time.monotonic()


def texts(answer):
    return [message["message"] for message in answer.json()["data"]["messages"]]


def after_the_watcher_passes(app, polls, chats, number):
    """A message on chat `number` written by the test's own process (to the server, another
    process), once that chat's waiting poll has answered it. The server's change watcher learns
    of changes in commit order (SQLite: every chat changed since its last look, oldest first;
    PostgreSQL: NOTIFYs as they committed), so by then it has handled every change committed
    before: a poll it would wake by mistake for one of those has been woken, and counted in
    /healthz."""
    email, token, chat_id = chats[number]
    written = app.test_client().post("/api/client/live/chat",
                                     headers={"Authorization": f"Bearer {token}"},
                                     json={"data": {"email": email, "chat_id": chat_id,
                                                    "message": "from another process"}})
    assert written.status_code == 200, written.json
    [answer] = answered_in_time(polls, [number]).values()
    assert texts(answer) == ["from another process"]


def chat_status(server, email, token, chat_id):
    answer = live_post(requests, server.url, "messages", email, token,
                       {"chat_id": chat_id, "after": 1, "wait": 0})
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]["status"]


def assert_nothing_new(answer, chat_id):
    """The whole page of a poll on `chat_id` woken by a close or a reopen: nothing new, and the
    status it read (closed, or open again: either is right, as it read the chat)."""
    assert answer.status == 200
    page = answer.json()["data"]
    assert page == {"chatId": chat_id, "status": page["status"], "messages": [],
                    "next_after": 1, "has_more": False}


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
        assert polls.collect() == {}  # every poll still waits

        # New requests are answered beside them, not queued behind them: before the first
        # poll's wait could have ended...
        assert requests.get(f"{server.url}/healthz", timeout=WAIT).status_code == 200
        assert time.monotonic() - min(polls.sent.values()) < WAIT
        # ...and each waiting poll answers its own chat's message.
        woken = range(0, waiters, 25)
        for number in woken:
            email, token, chat_id = chats[number]
            send(server, email, token, chat_id, f"for poll {number}")
        answers = answered_in_time(polls, woken)
        for number, answer in answers.items():
            assert answer.status == 200 and texts(answer) == [f"for poll {number}"]
        after_the_watcher_passes(app, polls, chats, 1)  # (poll 1 answers it)
        assert set(polls.collect()) == {*woken, 1}  # no other poll answered
        assert long_polls(server)["waiting"] == waiters - len(woken) - 1


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
        answers = answered_in_time(polls, [0, "agent"])
        assert texts(answers[0]) == texts(answers["agent"]) == ["only chat 0"]
        wait_for_waiting(server, 19)
        assert long_polls(server)["woken"] == woken_before + 2  # no other poll was woken

        # A poll for what comes after seq 3: the message that is seq 3 wakes it (it reads,
        # finds nothing for it, and waits on). On SQLite the watcher also sees this
        # process's own commit: it must not wake the poll a second time for it.
        polls.post("later", POLL, poll_data(email, chat_id, after=3), token)
        wait_for_waiting(server, 20)
        send(server, email, token, chat_id, "seq 3")
        after_the_watcher_passes(app, polls, chats, 9)  # (poll 9 answers it)
        assert "later" not in polls.collect()
        assert long_polls(server)["waiting"] == 19  # "later" among them
        assert long_polls(server)["woken"] == woken_before + 4  # "later" once, and poll 9
        woken_before += 4

        # An agent's reply and a close: one poll each.
        reply = requests.post(f"{server.url}/api/agent/chats/{chats[5][2]}/messages",
                              json={"data": {"message": "for chat 5"}}, timeout=30,
                              headers={"Authorization": f"Bearer {agent.token}"})
        assert reply.status_code == 200
        closed = requests.post(f"{server.url}/api/agent/chats/{chats[7][2]}/close",
                               timeout=30, headers={"Authorization": f"Bearer {agent.token}"})
        assert closed.status_code == 200
        answers = answered_in_time(polls, [5, 7])
        assert texts(answers[5]) == ["for chat 5"]
        assert answers[7].json()["data"]["status"] == "closed"
        after_the_watcher_passes(app, polls, chats, 11)  # (poll 11 answers it)
        assert set(polls.collect()) == {0, "agent", 9, 5, 7, 11}
        assert long_polls(server)["woken"] == woken_before + 3  # 5, 7 and 11
        assert long_polls(server)["waiting"] == 16


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
        assert time.monotonic() - started < WAIT / 2  # at once, not after its wait
        assert answer.status_code == 200
        page = answer.json()["data"]
        assert page["messages"] == [] and page["next_after"] == 1
        assert 2 <= page["retry_after"] <= 6
        assert answer.headers["Retry-After"] == str(page["retry_after"])
        assert long_polls(server) | {"woken": 0} == {"waiting": 5, "capacity": 5,
                                                      "woken": 0}


ACROSS_WAIT = 20  # seconds the polls across processes may wait


def poll_through(server, email, token, chat_id, after=1):
    return live_post(requests, server.url, "messages", email, token,
                     {"chat_id": chat_id, "after": after, "wait": ACROSS_WAIT}, timeout=60)


def wakes_across_processes(one, two, customer):
    """A poll waiting on `two` answers a message sent through `one`, woken before its wait
    could run out; the same for a close."""
    email, token, chat_id = customer
    for after, change in ((1, "message"), (2, "close")):
        result = {}

        def wait_on_two(after=after, result=result):
            result["answer"] = poll_through(two, email, token, chat_id, after)
            result["at"] = time.monotonic()

        poller = threading.Thread(target=wait_on_two)
        asked = time.monotonic()
        poller.start()
        try:
            wait_for_waiting(two, 1)
            if change == "message":
                send(one, email, token, chat_id, "across")
            else:
                closed = live_post(requests, one.url, "close", email, token,
                                   {"chat_id": chat_id})
                assert closed.status_code == 200
        finally:
            poller.join(60)
        page = result["answer"].json()["data"]
        if change == "message":
            assert [m["message"] for m in page["messages"]] == ["across"]
        else:
            assert page["status"] == "closed"
        # Woken, not timed out (a poll that waits its time out reads once more, and would
        # answer the same): nothing but the watcher wakes it before its wait has run out.
        assert result["at"] - asked < ACROSS_WAIT


@needs_postgres
def test_a_poll_on_one_postgres_instance_wakes_on_a_change_through_another(
        tmp_path, database_url, app):
    customer = open_chats(app, 1)[0]
    release_database()
    with running_server(tmp_path, database_url) as one, \
            running_server(tmp_path, database_url) as two:
        woken = long_polls(two)["woken"]
        wakes_across_processes(one, two, customer)
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
        wakes_across_processes(one, two, customer)


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
            server.process.send_signal(signal.SIGTERM)
            # At once: before their wait could run out (the drain would cut them first).
            answers = answered_in_time(polls, range(waiters))
            assert server.process.wait(20) == 0
        for answer in answers.values():
            assert answer.status == 200 and answer.json()["data"]["messages"] == []
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
            answers = answered_in_time(polls, range(len(chats)))
            for email, token, chat_id in chats:  # the reopens went through, after the closes
                wait_until(lambda email=email, token=token, chat_id=chat_id:
                           chat_status(server, email, token, chat_id) == "open",
                           what=f"{chat_id} open again")
    for number, answer in answers.items():
        assert_nothing_new(answer, chats[number][2])


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
            assert answer.json()["data"]["status"] == {"close": "closed",
                                                       "reopen": "open"}[action]
        # Closed or open again, as the poll read it: what matters is that it answered before
        # its wait ran out.
        [answer] = answered_in_time(polls, ["poll"]).values()
        assert chat_status(two, email, token, chat_id) == "open"
    assert_nothing_new(answer, chat_id)
