"""SIGTERM: `python app.py` stops accepting, lets requests in flight finish (each answered
whole), and exits 0 as soon as none is left; no acknowledged message is lost, and the drain
costs no CPU while it waits."""
import os
import signal
import socket
import threading
import time

import pytest
import requests

import models
from support.helpers import (
    WATCHED_SERVER,
    live_post,
    release_database,
    running_server,
    seed_customers,
    stepped_out,
    wait_until,
)
from support.many_polls import (
    RawPolls,
    answered_in_time,
    open_chats,
    poll_each,
    raise_open_files_limit,
    wait_for_waiting,
)
from support.wire import (
    CutOff,
    chat_request,
    connectable,
    in_thread,
    open_chat,
    port_of,
    read_answer,
    receive,
)

SENDERS = 4


@pytest.mark.slow
def test_sigterm_under_load_loses_no_acknowledged_message(tmp_path, database_url, app):
    customers = seed_customers(app, SENDERS)
    release_database()
    with running_server(tmp_path, database_url) as server:
        chat_ids = [open_chat(server, customer) for customer in customers]
        port = port_of(server)
        results = [{"acked": [], "unanswered": 0, "cut": [], "other": []} for _ in customers]

        def keep_sending(customer, chat_id, result):
            """Sends on a keep-alive connection, a new one whenever the server closes it,
            until a connection is refused."""
            sock = None
            for number in range(100_000):
                text = f"{customer[0]} message {number}"
                try:
                    sock = sock or socket.create_connection(("127.0.0.1", port), timeout=30)
                    sock.sendall(chat_request(customer, chat_id, text))
                    answer = read_answer(sock)
                except ConnectionRefusedError:
                    return
                except (BrokenPipeError, ConnectionResetError):
                    answer = None
                except CutOff as cut:
                    result["cut"].append(str(cut))
                    answer = None
                if answer is None:
                    result["unanswered"] += 1
                else:
                    status, headers, body = answer
                    if status == 200:
                        result["acked"].append((body["data"]["messageId"], text))
                    else:
                        result["other"].append((status, body))
                    if headers.get("connection") != "close":
                        continue
                if sock is not None:
                    sock.close()
                sock = None

        threads = [threading.Thread(target=keep_sending, args=args)
                   for args in zip(customers, chat_ids, results, strict=True)]
        for thread in threads:
            thread.start()
        try:
            wait_until(lambda: all(len(result["acked"]) >= 5 for result in results),
                       what="every sender to be under way")
            server.process.send_signal(signal.SIGTERM)
            wait_until(lambda: not connectable("127.0.0.1", port), what="connections refused")
            assert server.process.wait(10 + 10) == 0  # SHUTDOWN_GRACE_SECONDS + a margin
        finally:
            for thread in threads:
                thread.join(60)
        assert not any(thread.is_alive() for thread in threads)
        log = server.log()

    assert [(result["cut"], result["other"]) for result in results] == [([], [])] * SENDERS
    stored = dict(models.Message.select(models.Message.public_id, models.Message.body).tuples())
    for result in results:
        for message_id, text in result["acked"]:
            assert stored.get(message_id) == text
    assert "SIGTERM: no new connections" in log and "Traceback" not in log


@pytest.mark.slow
def test_sigterm_lets_a_request_in_flight_finish(tmp_path, database_url, app):
    """Half a request is in when SIGTERM comes: new connections are refused at once, yet the
    server stays up for it, answers it in whole (saying it closes the connection), and exits 0."""
    [customer] = seed_customers(app, 1)
    release_database()
    with running_server(tmp_path, database_url, env={"SHUTDOWN_GRACE_SECONDS": "30"}) as server:
        chat_id = open_chat(server, customer)
        port = port_of(server)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(chat_request(customer, chat_id, "before"))
            assert read_answer(sock)[0] == 200  # the server has this connection
            request = chat_request(customer, chat_id, "in flight")
            sock.sendall(request[:-10])

            server.process.send_signal(signal.SIGTERM)
            wait_until(lambda: not connectable("127.0.0.1", port), what="connections refused")
            assert server.process.poll() is None  # still serving the request in flight

            sock.sendall(request[-10:])
            status, headers, body = read_answer(sock)
            assert status == 200 and headers["connection"] == "close"
            assert body["message"] == "Message sent successfully."
            assert receive(sock) == b""
        assert server.process.wait(30 + 10) == 0
        log = server.log()
    [text] = models.Message.select(models.Message.body).where(
        models.Message.public_id == body["data"]["messageId"]).tuples()
    assert text == ("in flight",)
    assert "waiting up to 30 s for 1 request(s) in flight" in log
    assert "every request in flight is answered" in log


@pytest.mark.slow
def test_sigterm_answers_waiting_long_polls_at_once(tmp_path, database_url, app):
    [customer] = seed_customers(app, 1)
    release_database()
    grace = 8
    env = {"SHUTDOWN_GRACE_SECONDS": str(grace)}
    with running_server(tmp_path, database_url, WATCHED_SERVER, env) as server:
        chat_id = open_chat(server, customer)
        email, token = customer
        poll = {}
        poller = in_thread(lambda: live_post(requests, server.url, "messages", email, token,
                                             {"chat_id": chat_id, "after": 1, "wait": 25},
                                             timeout=60), poll)
        try:
            wait_until(lambda: stepped_out(server), what="the poll to wait")
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(grace + 10) == 0
        finally:
            poller.join(60)
    assert poll["value"].status_code == 200, poll  # answered, not cut off when grace ended
    assert poll["value"].json()["data"]["messages"] == []
    assert poll["ended"] - signalled < grace


@pytest.mark.slow
def test_sigterm_answers_a_thousand_waiting_polls_and_exits_at_once(tmp_path, database_url,
                                                                      app):
    """Every waiting poll is answered at once on the signal (asked: "within a second", on a
    quiet machine): before its own wait could run out, which is the only other way it could
    answer. And the process is gone as soon as none is left, before the grace runs out."""
    waiters, grace = 1000, 30
    if raise_open_files_limit() < waiters + 200:
        pytest.skip("this machine's open-file limit is too low for the test itself")
    chats = open_chats(app, waiters)
    release_database()
    env = {"LONGPOLL_MAX_WAITERS": str(waiters), "SHUTDOWN_GRACE_SECONDS": str(grace)}
    with running_server(tmp_path, database_url, env=env) as server, \
            RawPolls(server.url) as polls:
        poll_each(polls, chats)
        wait_for_waiting(server, waiters)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        answers = answered_in_time(polls, range(waiters))
        assert server.process.wait(grace + 10) == 0
        exited = time.monotonic()
        log = server.log()
    for number, answer in answers.items():
        assert answer.status == 200 and answer.json() == {
            "status": "success", "message": "Messages.", "error": None,
            "data": {"chatId": chats[number][2], "status": "open", "messages": [],
                     "next_after": 1, "has_more": False}}
    assert exited - signalled < grace  # a drain that waited out the grace would end after it
    assert f"waiting up to {grace} s for {waiters} request(s) in flight" in log
    assert "every request in flight is answered: stopping" in log
    assert "Traceback" not in log


def cpu_seconds(pid):
    """The CPU time process `pid` has used so far, user and system (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_share(pid, seconds):
    """The share of one core process `pid` uses over the next `seconds`."""
    cpu, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)  # the span measured, not a wait for some state
    return (cpu_seconds(pid) - cpu) / (time.monotonic() - started)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads Linux's /proc")
def test_a_drain_waiting_on_a_request_costs_no_cpu_and_ends_with_the_grace(
        tmp_path, database_url, app):
    """Half a request is in when SIGTERM comes: while the server waits for the rest it sleeps
    (a loop polling without a timeout would take a whole core from the threads answering), and
    when the grace runs out it exits 0 all the same."""
    [customer] = seed_customers(app, 1)
    release_database()
    grace = 4
    with running_server(tmp_path, database_url,
                        env={"SHUTDOWN_GRACE_SECONDS": str(grace)}) as server:
        chat_id = open_chat(server, customer)
        port = port_of(server)
        pid = server.process.pid
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(chat_request(customer, chat_id, "in flight")[:-10])
            assert cpu_share(pid, 1) < 0.3  # serving, a request half in

            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            wait_until(lambda: "SIGTERM: no new connections" in server.log(),
                       what="the drain to begin")
            assert cpu_share(pid, 2) < 0.3  # draining; the bug took a whole core

            assert server.process.wait(grace + 10) == 0
            assert time.monotonic() - signalled >= grace  # it waited for the request
            assert read_answer(sock) is None  # cut off when the grace ran out
        log = server.log()
    assert f"waiting up to {grace} s for 1 request(s) in flight" in log
    assert f"stopping with 1 request(s) still in flight after {grace} s" in log
