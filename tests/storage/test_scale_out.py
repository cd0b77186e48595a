"""Moving to PostgreSQL and running several instances on it."""
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

import models
from chat import accounts
from support.helpers import (
    WATCHED_SERVER,
    AgentClient,
    Customer,
    live_post,
    new_agent,
    release_database,
    running_server,
    sign,
    stepped_out,
    wait_until,
)

UUID = "123e4567-e89b-12d3-a456-426614174000"
POSTGRES = os.environ.get("TEST_DATABASE_URL")
needs_postgres = pytest.mark.skipif(not POSTGRES, reason="runs in the PostgreSQL pass")


def fill(app):
    """A small but complete database: users, an agent, chats, messages, an idempotency key."""
    client = app.test_client()
    with app.app_context():
        accounts.save_user("mover@example.com", UUID, "Mover")
        accounts.save_user("other@example.com", "00000000-0000-4000-8000-000000000002")
    customer = Customer("mover@example.com", UUID, client)
    agent = new_agent(app, "mover-agent", "Agent", client)
    chat_ids = [customer.create(f"chat {n}") for n in range(3)]
    for chat_id in chat_ids:
        agent.reply(chat_id, "hello")
        customer.send(chat_id, "thanks", headers={"Idempotency-Key": f"k-{chat_id}"})
    customer.read(chat_ids[0], 2)
    return agent.token, chat_ids


def copy_to(app, target_url):
    return app.test_cli_runner().invoke(args=["db", "copy", "--to", target_url])


def target_url(tmp_path):
    return POSTGRES or f"sqlite:///{tmp_path / 'copy.db'}"


def test_db_copy_moves_everything_and_checks_counts(tmp_path, make_app):
    source = make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'old.db'}")
    token, chat_ids = fill(source)
    result = copy_to(source, target_url(tmp_path))
    assert result.exit_code == 0, result.output
    for table, rows in [("user", 2), ("agent", 1), ("chat", 3), ("message", 9),
                        ("idempotency_key", 3)]:
        assert f"{table}: {rows} -> {rows} ok" in result.output
    assert "copy verified" in result.output
    release_database()

    moved = make_app(DATABASE_URL=target_url(tmp_path))
    client = moved.test_client()
    customer, agent = Customer("mover@example.com", UUID, client), AgentClient(
        "mover-agent", token, client)
    polled = customer.poll(chat_ids[0]).json["data"]["messages"]
    assert [m["message"] for m in polled] == ["chat 0", "hello", "thanks"]
    assert customer.list().json["data"]["chats"][-1]["unread"] == 0
    replay = customer.send(chat_ids[0], "thanks", headers={"Idempotency-Key": f"k-{chat_ids[0]}"})
    assert replay.headers["Idempotent-Replayed"] == "true"
    # New rows get fresh ids after the copied ones.
    assert customer.create("a new chat")
    assert agent.reply(chat_ids[1], "still works").json["data"]["seq"] == 4


def test_db_copy_refuses_a_target_that_holds_data(tmp_path, make_app):
    source = make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'old.db'}")
    fill(source)
    assert copy_to(source, target_url(tmp_path)).exit_code == 0
    again = copy_to(source, target_url(tmp_path))
    assert again.exit_code != 0 and "already holds data" in again.output


@needs_postgres
@pytest.mark.slow
def test_two_instances_on_one_postgres(tmp_path, database_url, app):
    customers = []
    with app.app_context():
        for number in range(2):
            email = f"both{number}@example.com"
            accounts.save_user(email, UUID)
            customers.append((email, sign(email, UUID)))
    release_database()

    with running_server(tmp_path, database_url, WATCHED_SERVER) as one, \
            running_server(tmp_path, database_url) as two:
        servers = [one, two]

        def post(server, path, email, token, data):
            return live_post(requests, server.url, path, email, token, data)

        chats = [post(one, "create", email, token, {"created_at": 1, "message": "hi"})
                 .json()["data"]["chatId"] for email, token in customers]
        acknowledged, failures = [], []

        def sender(thread):
            email, token = customers[thread % 2]
            for number in range(20):  # interleaved: every other request to the other instance
                response = post(servers[(thread + number) % 2], "chat", email, token,
                                {"chat_id": chats[thread % 2], "message": f"{thread}-{number}"})
                if response.status_code == 200:
                    acknowledged.append(response.json()["data"]["messageId"])
                else:
                    failures.append(response.text)

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == [] and len(acknowledged) == 160

        # A long-poll on one instance sees a message sent through the other.
        email, token = customers[0]
        with ThreadPoolExecutor(1) as pool:
            poll = pool.submit(post, one, "messages", email, token,
                               {"chat_id": chats[0], "after": 81, "wait": 20})
            wait_until(lambda: stepped_out(one), what="the poll to wait")
            sent = time.monotonic()
            assert post(two, "chat", email, token,
                        {"chat_id": chats[0], "message": "across"}).status_code == 200
            page = poll.result(timeout=60).json()["data"]
        assert [m["message"] for m in page["messages"]] == ["across"]
        assert time.monotonic() - sent < 10  # not its 20 s wait: it re-reads every half second

    with app.app_context():
        for chat_id in chats:
            chat = models.Chat.get(models.Chat.public_id == chat_id)
            seqs = [m.seq for m in chat.messages.order_by(models.Message.seq)]
            assert seqs == list(range(1, chat.last_seq + 1))
        stored = {m.public_id for m in models.Message.select()}
        assert set(acknowledged) <= stored
