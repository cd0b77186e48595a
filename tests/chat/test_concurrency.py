"""Concurrent senders against a real waitress server on a SQLite file."""
import threading
import time

import pytest
import requests

import models
from support.helpers import (
    live_post,
    new_agent,
    new_customer,
    release_database,
    running_server,
    seed_customers,
)

pytestmark = pytest.mark.slow

THREADS = 16
MESSAGES_PER_THREAD = 25
CHATS = 4


def test_concurrent_sends_lose_nothing_and_number_gap_free(tmp_path, database_url, app):
    customers = seed_customers(app, CHATS)
    release_database()

    acknowledged, failures = [], []
    with running_server(tmp_path, database_url, env={"WAITRESS_THREADS": "8"}) as server:
        chats = []
        for email, token in customers:
            response = requests.post(f"{server.url}/api/client/live/create", timeout=30, json={
                "data": {"email": email, "created_at": 1, "message": "first"}},
                headers={"Authorization": f"Bearer {token}"})
            chats.append(response.json()["data"]["chatId"])

        def sender(thread):
            email, token = customers[thread % CHATS]
            with requests.Session() as session:
                for number in range(MESSAGES_PER_THREAD):
                    try:
                        response = session.post(
                            f"{server.url}/api/client/live/chat", timeout=30,
                            json={"data": {"chat_id": chats[thread % CHATS], "email": email,
                                           "message": f"thread {thread} message {number}"}},
                            headers={"Authorization": f"Bearer {token}"})
                    except requests.RequestException as error:
                        failures.append(repr(error))
                        continue
                    if response.status_code == 200:
                        acknowledged.append(response.json()["data"]["messageId"])
                    else:
                        failures.append(response.text)

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert "Traceback" not in server.log()

    assert failures == []
    assert len(acknowledged) == THREADS * MESSAGES_PER_THREAD
    with app.app_context():
        stored = {m.public_id for m in models.Message.select(models.Message.public_id)}
        assert set(acknowledged) <= stored
        per_chat = THREADS // CHATS * MESSAGES_PER_THREAD + 1
        for chat_id in chats:
            chat = models.Chat.get(models.Chat.public_id == chat_id)
            seqs = [m.seq for m in chat.messages.order_by(models.Message.seq)]
            assert seqs == list(range(1, per_chat + 1))
            assert chat.last_seq == per_chat


def seed_customer(app):
    customer = new_customer(app, "poller@example.com")
    return customer.email, customer.token


def post(session, server, path, email, token, data, headers=None):
    return live_post(session, server.url, path, email, token, data, headers)


def test_cursor_never_skips_or_repeats_under_concurrent_writers(tmp_path, database_url, app):
    email, token = seed_customer(app)
    agent_token = new_agent(app, "writer").token
    release_database()

    writers, per_writer = 8, 20
    with running_server(tmp_path, database_url, env={"WAITRESS_THREADS": "16"}) as server:
        session = requests.Session()
        chat_id = post(session, server, "create", email, token,
                       {"created_at": 1, "message": "start"}).json()["data"]["chatId"]
        acknowledged, failures = [], []

        def writer(number):
            with requests.Session() as own:
                for index in range(per_writer):
                    if number % 2:  # half the writers are the agent replying
                        response = own.post(
                            f"{server.url}/api/agent/chats/{chat_id}/messages", timeout=30,
                            json={"data": {"message": f"w{number}-{index}"}},
                            headers={"Authorization": f"Bearer {agent_token}"})
                    else:
                        response = post(own, server, "chat", email, token,
                                        {"chat_id": chat_id, "message": f"w{number}-{index}"})
                    if response.status_code == 200:
                        acknowledged.append(response.json()["data"]["messageId"])
                    else:
                        failures.append(response.text)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
        for thread in threads:
            thread.start()

        seen, after = [], 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            page = post(session, server, "messages", email, token,
                        {"chat_id": chat_id, "after": after, "limit": 7, "wait": 1}).json()
            messages = page["data"]["messages"]
            seen += [(m["seq"], m["messageId"]) for m in messages]
            after = page["data"]["next_after"]
            if not any(t.is_alive() for t in threads) and not page["data"]["has_more"] \
                    and after == writers * per_writer + 1:
                break
        for thread in threads:
            thread.join()

    assert failures == []
    seqs = [seq for seq, _ in seen]
    assert seqs == list(range(1, writers * per_writer + 2))  # no gap, no repeat, in order
    assert set(acknowledged) <= {message_id for _, message_id in seen}


def test_concurrent_replays_of_one_key_store_one_message(tmp_path, database_url, app):
    email, token = seed_customer(app)
    release_database()
    with running_server(tmp_path, database_url, env={"WAITRESS_THREADS": "16"}) as server:
        session = requests.Session()
        chat_id = post(session, server, "create", email, token,
                       {"created_at": 1, "message": "start"}).json()["data"]["chatId"]
        answers, barrier = [], threading.Barrier(10)

        def replay():
            with requests.Session() as own:
                barrier.wait()
                response = post(own, server, "chat", email, token,
                                {"chat_id": chat_id, "message": "pay me once"},
                                headers={"Idempotency-Key": "retry-42"})
                answers.append((response.status_code, response.json()["data"]))

        threads = [threading.Thread(target=replay) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert [status for status, _ in answers] == [200] * 10
    assert len({data["messageId"] for _, data in answers}) == 1
    with app.app_context():
        chat = models.Chat.get(models.Chat.public_id == chat_id)
        assert [m.body for m in chat.messages.order_by(models.Message.seq)] == [
            "start", "pay me once"]
