"""What one client can cost everyone else: failed authentications per address (which never
shut out valid credentials), waiting polls per customer, poll pages bounded in bytes, polls
per customer, and a rate-limit store that is down."""
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

import models
from api import ratelimits
from support.helpers import (
    WATCHED_SERVER,
    Customer,
    assert_error,
    live_post,
    new_agent,
    new_customer,
    release_database,
    running_server,
    sign,
    stepped_out,
    wait_until,
)

WAIT = 20  # seconds a poll may wait here; a woken poll answers well before that
ADMIN_TOKEN = "admin-token-for-the-abuse-limit-tests-0123456789"


def bad_customer_call(client, **environ):
    return client.post("/api/client/live/list", json={"data": {"email": "x@example.com"}},
                       headers={"Authorization": "Bearer " + "0" * 64}, environ_base=environ)


def never_limited(client):
    for path in ("/healthz", "/api/openapi.json"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.get_data(as_text=True))


# --- failed authentications per address ---------------------------------------------------

@pytest.fixture
def limited(make_app):
    return make_app(RATELIMIT_AUTH_FAILURES="3 per minute", ADMIN_TOKEN=ADMIN_TOKEN)


def test_an_exhausted_address_still_passes_valid_credentials(limited):
    customer = new_customer(limited)
    agent = new_agent(limited, "alice")
    client = limited.test_client()
    chat_id = customer.create()
    for _ in range(3):
        assert_error(bad_customer_call(client), 401, "unauthorized")
    response = bad_customer_call(client)
    assert_error(response, 429, "rate_limited")
    assert 1 <= int(response.headers["Retry-After"]) <= 61

    # Valid credentials from the same address: every API works, again and again.
    for _ in range(5):
        assert customer.poll(chat_id).status_code == 200
        assert customer.send(chat_id, "still me").status_code == 200
        assert agent.get("/chats").status_code == 200
    assert agent.reply(chat_id, "hello").status_code == 200
    admin = client.put("/api/admin/users", json={"data": {"email": "n@example.com",
                                                          "uuid": customer.uuid}},
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert admin.status_code == 200
    never_limited(client)


def test_every_failure_of_an_exhausted_address_is_the_same_429(limited):
    customer = new_customer(limited)
    client = limited.test_client()
    for _ in range(3):
        bad_customer_call(client)
    failures = [
        client.post("/api/client/live/create", json={"data": {"email": customer.email}},
                    headers={"Authorization": "Bearer " + sign(customer.email, "wrong")}),
        client.post("/api/client/live/list", json={"data": {"email": "nobody@example.com"}}),
        bad_customer_call(client),
        client.get("/api/agent/chats", headers={"Authorization": "Bearer szagent_" + "x" * 43}),
        client.get("/api/agent/chats", headers={"Authorization": f"Bearer {customer.token}"}),
        client.put("/api/admin/users", json={"data": {}},
                   headers={"Authorization": "Bearer not-the-admin-token"}),
    ]
    bodies = set()
    for response in failures:
        assert_error(response, 429, "rate_limited")
        assert int(response.headers["Retry-After"]) >= 1
        bodies.add(response.get_data())
    assert len(bodies) == 1


def test_failures_count_per_address(limited):
    client = limited.test_client()
    for _ in range(4):
        bad_customer_call(client, REMOTE_ADDR="203.0.113.7")
    assert_error(bad_customer_call(client, REMOTE_ADDR="203.0.113.7"), 429, "rate_limited")
    assert_error(bad_customer_call(client, REMOTE_ADDR="198.51.100.9"), 401, "unauthorized")


def test_healthz_and_the_document_are_never_limited(make_app):
    app = make_app(RATELIMIT_AUTH_FAILURES="1 per minute",
                   RATELIMIT_CUSTOMER_POLLS="1 per minute",
                   RATELIMIT_CUSTOMER_SENDS="1 per minute", RATELIMIT_AGENT_CALLS="1 per minute")
    client = app.test_client()
    for _ in range(30):
        never_limited(client)
    for _ in range(3):
        bad_customer_call(client)
    assert_error(bad_customer_call(client), 429, "rate_limited")
    for _ in range(30):
        never_limited(client)


# --- polls and the other customer calls, per customer -----------------------------------

def test_customer_polls_and_reads_share_a_limit_per_customer(make_app):
    app = make_app(RATELIMIT_CUSTOMER_POLLS="4 per minute", RATELIMIT_CUSTOMER_SENDS="5 per minute")
    alice, bob = new_customer(app), new_customer(app)
    chat_id = alice.create()
    assert alice.poll(chat_id).status_code == 200
    assert alice.list().status_code == 200
    assert alice.read(chat_id, 1).status_code == 200
    assert alice.poll(chat_id, wait=1).status_code == 200  # it has a message: no wait
    for response in (alice.poll(chat_id), alice.list(), alice.read(chat_id, 1),
                     alice.close(chat_id)):
        assert_error(response, 429, "rate_limited")
        assert 1 <= int(response.headers["Retry-After"]) <= 61
    assert alice.send(chat_id, "sending has its own budget").status_code == 200
    bob_chat = bob.create()
    assert bob.poll(bob_chat).status_code == 200  # another customer's budget is untouched
    assert bob.close(bob_chat).status_code == 200


# --- waiting polls per customer -----------------------------------------------------------

def test_one_customers_dropped_polls_leave_room_for_others_to_wait(app, waiting):
    """Customer A opens 8 waiting polls (as many as the whole process lets wait) and walks
    away: 2 of them wait, the others answer at once, and customer B's poll still waits and is
    woken by a message."""
    a, b = new_customer(app), new_customer(app)
    agent = new_agent(app, "alice")
    a_chat, b_chat = a.create(), b.create()
    with ThreadPoolExecutor(9) as pool:
        started = time.monotonic()
        a_polls = [pool.submit(Customer(a.email, a.uuid, app.test_client()).poll, a_chat,
                               after=1, wait=WAIT) for _ in range(8)]
        wait_until(lambda: sum(poll.done() for poll in a_polls) == 6,
                   what="six of A's polls to answer at once")
        assert time.monotonic() - started < WAIT / 2
        for poll in a_polls:
            if poll.done():
                page = poll.result().json["data"]
                assert page["messages"] == [] and page["next_after"] == 1
        wait_until(lambda: len(set(waiting)) == 2, what="two of A's polls to wait")

        b_poll = pool.submit(Customer(b.email, b.uuid, app.test_client()).poll, b_chat,
                             after=1, wait=WAIT)
        wait_until(lambda: len(set(waiting)) == 3, what="B's poll to wait")
        woken = time.monotonic()
        assert agent.reply(b_chat, "for B").status_code == 200
        page = b_poll.result(timeout=60).json["data"]
        assert [m["message"] for m in page["messages"]] == ["for B"]
        assert time.monotonic() - woken < WAIT / 2

        assert agent.reply(a_chat, "for A").status_code == 200  # releases A's waiting two
        for poll in a_polls:
            assert poll.result(timeout=60).status_code == 200
        assert sum(poll.result().json["data"]["messages"] != [] for poll in a_polls) == 2


def test_the_per_customer_cap_is_a_setting(make_app, waiting):
    app = make_app(LONGPOLL_MAX_WAITERS_PER_CUSTOMER=1)
    customer = new_customer(app)
    chat_id = customer.create()
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(Customer(customer.email, customer.uuid, app.test_client()).poll,
                            chat_id, after=1, wait=WAIT)
        wait_until(lambda: waiting, what="the first poll to wait")
        started = time.monotonic()
        page = customer.poll(chat_id, after=1, wait=WAIT).json["data"]
        assert page["messages"] == []
        assert time.monotonic() - started < WAIT / 2
        assert 2 <= page["retry_after"] <= 6  # back off, rather than poll again at once
        customer.send(chat_id, "wake up")
        assert len(first.result(timeout=60).json["data"]["messages"]) == 1


@pytest.mark.slow
def test_dropped_connections_of_one_customer_leave_room_on_a_real_server(
        tmp_path, database_url, app):
    """The same with connections really dropped: the client gives up on its 8 polls; the
    server lets 2 of them wait out their time, and B's poll still waits."""
    a, b = new_customer(app), new_customer(app)
    agent = new_agent(app, "alice")
    a_chat, b_chat = a.create(), b.create()
    release_database()
    with running_server(tmp_path, database_url, command=WATCHED_SERVER) as server:
        for _ in range(8):
            # The client walks away from a poll that waits; on the server it goes on.
            with contextlib.suppress(requests.Timeout):
                live_post(requests, server.url, "messages", a.email, a.token,
                          {"chat_id": a_chat, "after": 1, "wait": WAIT}, timeout=0.5)
        wait_until(lambda: len(stepped_out(server)) == 2, what="two of A's polls to wait")
        with ThreadPoolExecutor(1) as pool:
            b_poll = pool.submit(live_post, requests, server.url, "messages", b.email, b.token,
                                 {"chat_id": b_chat, "after": 1, "wait": WAIT}, timeout=60)
            wait_until(lambda: len(stepped_out(server)) == 3, what="B's poll to wait")
            reply = requests.post(f"{server.url}/api/agent/chats/{b_chat}/messages", timeout=30,
                                  json={"data": {"message": "for B"}},
                                  headers={"Authorization": f"Bearer {agent.token}"})
            assert reply.status_code == 200
            page = b_poll.result(timeout=60).json()["data"]
        assert [m["message"] for m in page["messages"]] == ["for B"]
        requests.post(f"{server.url}/api/agent/chats/{a_chat}/messages", timeout=30,
                      json={"data": {"message": "for A"}},
                      headers={"Authorization": f"Bearer {agent.token}"})


# --- poll pages bounded in bytes --------------------------------------------------------

EMOJI = "\U0001f600"  # 4 bytes in UTF-8
# The test client sends JSON with \u escapes: 10,000 emoji are 120 KB on the way in.
ROOMY_BODIES = 1024 * 1024


def follow(poll, limit=100):
    """Every page from seq 0 on, following `next_after`."""
    pages, after = [], 0
    while True:
        page = poll(after=after, limit=limit)
        pages.append(page)
        assert page["next_after"] == (page["messages"][-1]["seq"] if page["messages"]
                                      else after)
        after = page["next_after"]
        if not page["has_more"]:
            return pages


def utf8_size(message):
    return len(message["message"].encode("utf-8"))


@pytest.mark.parametrize("side", ["customer", "agent"])
def test_a_page_is_bounded_in_bytes_and_the_cursor_sees_every_message_once(make_app, side):
    app = make_app(MAX_POLL_PAGE_BYTES=100_000, MAX_CONTENT_LENGTH=ROOMY_BODIES)
    customer = new_customer(app)
    agent = new_agent(app, "alice")
    big, small = EMOJI * 10_000, "small"  # 40,000 bytes (120,000 as \u escapes), 5 bytes
    bodies = [big, small, big, big, small, small, big, big, big, small, big]
    chat_id = customer.create(bodies[0])
    for body in bodies[1:]:
        assert customer.send(chat_id, body).status_code == 200

    if side == "customer":
        def poll(**params):
            return customer.poll(chat_id, **params).json["data"]
    else:
        def poll(**params):
            return agent.get(f"/chats/{chat_id}/messages", **params).json["data"]

    pages = follow(poll)
    seen = [m["message"] for page in pages for m in page["messages"]]
    assert seen == bodies  # each message exactly once, in order
    assert [m["seq"] for page in pages for m in page["messages"]] == list(range(1, 12))
    for page in pages:
        assert sum(map(utf8_size, page["messages"])) <= 100_000
    # Each page stops just before the message that would cross the bound.
    assert [len(page["messages"]) for page in pages] == [3, 4, 3, 1]
    assert [page["has_more"] for page in pages] == [True, True, True, False]


def test_a_page_holds_at_least_one_message(make_app):
    app = make_app(MAX_POLL_PAGE_BYTES=1024, MAX_CONTENT_LENGTH=ROOMY_BODIES)
    customer = new_customer(app)
    chat_id = customer.create(EMOJI * 10_000)
    customer.send(chat_id, "x" * 5_000)
    customer.send(chat_id, "tiny")
    pages = follow(lambda **params: customer.poll(chat_id, **params).json["data"])
    assert [[m["seq"] for m in page["messages"]] for page in pages] == [[1], [2], [3]]
    assert [page["has_more"] for page in pages] == [True, True, False]


def test_ascii_pages_hold_more_than_emoji_pages(make_app):
    """The bound is in UTF-8 bytes as sent: a character takes what it takes. (9,500 bytes of
    text: each message object also takes its keys, ids and timestamp, about 200 bytes.)"""
    app = make_app(MAX_POLL_PAGE_BYTES=100_000, MAX_CONTENT_LENGTH=ROOMY_BODIES)
    customer = new_customer(app)
    chat_id = customer.create("a" * 9_500)
    for _ in range(11):
        customer.send(chat_id, "a" * 9_500)
    page = customer.poll(chat_id, limit=100).json["data"]
    assert len(page["messages"]) == 10 and page["has_more"] is True


# What JSON escapes takes more room than the text: a control character is 6 bytes ("\u0001"),
# a quote or backslash 2.
ESCAPED_BODIES = ["\x01" * 10_000, '"' * 10_000, "\\" * 10_000, "\x1f\"\n" * 3_000, "small"]
PAGE_MARGIN = 1024  # the page's own envelope and one message object's keys and ids


@pytest.mark.parametrize("side", ["customer", "agent"])
def test_a_page_is_bounded_by_its_bytes_as_sent_even_when_escaped(make_app, side):
    app = make_app(MAX_POLL_PAGE_BYTES=100_000, MAX_CONTENT_LENGTH=ROOMY_BODIES)
    customer = new_customer(app)
    agent = new_agent(app, "alice")
    bodies = ESCAPED_BODIES * 4
    chat_id = customer.create(bodies[0])
    for index, body in enumerate(bodies[1:]):
        sent = agent.reply(chat_id, body) if index % 2 else customer.send(chat_id, body)
        assert sent.status_code == 200, sent.get_data(as_text=True)

    sizes = []

    def poll(**params):
        if side == "customer":
            response = customer.poll(chat_id, **params)
        else:
            response = agent.get(f"/chats/{chat_id}/messages", **params)
        assert response.status_code == 200
        sizes.append(len(response.get_data()))
        return response.json["data"]

    pages = follow(poll)
    assert [m["message"] for page in pages for m in page["messages"]] == bodies
    assert [m["seq"] for page in pages for m in page["messages"]] == \
        list(range(1, len(bodies) + 1))
    assert len(pages) > 3  # the escaped text was counted: 60 KB of \u0001 per message
    assert max(sizes) <= 100_000 + PAGE_MARGIN, sizes


def test_sixty_pages_of_control_characters_stay_within_the_default_bound(make_app):
    """The finding: 60 messages of 10,000 U+0001 made a 1,045,702-byte page against
    MAX_POLL_PAGE_BYTES=262144."""
    app = make_app(MAX_CONTENT_LENGTH=ROOMY_BODIES)
    bound = app.config["MAX_POLL_PAGE_BYTES"]
    customer = new_customer(app)
    chat_id = customer.create("\x01" * 10_000)
    for _ in range(59):
        assert customer.send(chat_id, "\x01" * 10_000).status_code == 200
    sizes = []

    def poll(**params):
        response = customer.poll(chat_id, **params)
        sizes.append(len(response.get_data()))
        return response.json["data"]

    pages = follow(poll)
    assert [m["seq"] for page in pages for m in page["messages"]] == list(range(1, 61))
    assert max(sizes) <= bound + PAGE_MARGIN, sizes


# --- a rate-limit store that is down ------------------------------------------------------

NOTHING_LISTENS = "redis://127.0.0.1:1"  # port 1: refused at once


def test_storage_status_reports_ok_and_off(make_app):
    with make_app().app_context():
        assert ratelimits.storage_status() == "ok"
    with make_app(RATELIMIT_ENABLED=False).app_context():
        assert ratelimits.storage_status() == "off"


def test_storage_status_asks_the_store_before_any_limited_request(make_app):
    """/healthz tells the store is down before a limited request has found it so."""
    app = make_app(RATELIMIT_STORAGE_URI=NOTHING_LISTENS)
    client = app.test_client()
    with app.app_context():
        assert ratelimits.storage_status() == "memory fallback"
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json["data"]["database"] == "ok"
    assert health.json["data"]["rate_limits"] == "memory fallback"


def test_storage_status_does_not_ping_the_memory_store(make_app, monkeypatch):
    app = make_app()

    def no_ping():
        raise AssertionError("the memory store was asked")

    monkeypatch.setattr(ratelimits.limiter.storage, "check", no_ping)
    with app.app_context():
        assert ratelimits.storage_status() == "ok"


def test_an_unreachable_store_falls_back_to_counting_in_memory(make_app, caplog):
    app = make_app(RATELIMIT_STORAGE_URI=NOTHING_LISTENS, RATELIMIT_AUTH_FAILURES="3 per minute",
                   RATELIMIT_CUSTOMER_SENDS="2 per minute",
                   RATELIMIT_CUSTOMER_POLLS="3 per minute")
    client = app.test_client()
    customer = new_customer(app)
    never_limited(client)

    chat_id = customer.create()  # the first limited request finds the store down
    assert any(record.levelno == logging.WARNING and "falling back to in-memory" in
               record.getMessage() for record in caplog.records)
    with app.app_context():
        assert ratelimits.storage_status() == "memory fallback"

    # The limits still count, in this process.
    assert customer.send(chat_id).status_code == 200
    assert_error(customer.send(chat_id), 429, "rate_limited")
    for _ in range(3):
        assert_error(bad_customer_call(client), 401, "unauthorized")
    response = bad_customer_call(client)
    assert_error(response, 429, "rate_limited")
    assert int(response.headers["Retry-After"]) >= 1
    for _ in range(3):
        assert customer.poll(chat_id).status_code == 200
    assert_error(customer.poll(chat_id), 429, "rate_limited")
    never_limited(client)
    with app.app_context():
        assert models.Message.select().count() == 2
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json["data"]["database"] == "ok"
    assert health.json["data"]["rate_limits"] == "memory fallback"


def test_a_new_app_starts_on_its_own_store(make_app):
    """The limiter is one per process: an app made after another found its store down does not
    inherit the fallback."""
    down = make_app(RATELIMIT_STORAGE_URI=NOTHING_LISTENS)
    new_customer(down).create()
    with down.app_context():
        assert ratelimits.storage_status() == "memory fallback"
    with make_app().app_context():
        assert ratelimits.storage_status() == "ok"


@pytest.mark.slow
def test_a_server_with_its_store_down_answers_and_logs_the_fallback(tmp_path, database_url,
                                                                    app):
    customer = new_customer(app)
    release_database()
    env = {"RATELIMIT_ENABLED": "true", "RATELIMIT_STORAGE_URI": NOTHING_LISTENS,
           "RATELIMIT_CUSTOMER_SENDS": "2 per minute"}
    with running_server(tmp_path, database_url, env=env) as server:
        def create():
            return requests.post(f"{server.url}/api/client/live/create", timeout=30,
                                 json={"data": {"email": customer.email, "created_at": 1,
                                                "message": "hi"}},
                                 headers={"Authorization": f"Bearer {customer.token}"})

        assert [create().status_code for _ in range(3)] == [200, 200, 429]
        response = requests.get(f"{server.url}/api/agent/chats", timeout=30,
                                headers={"Authorization": "Bearer szagent_" + "x" * 43})
        assert response.status_code == 401
        assert requests.get(f"{server.url}/healthz", timeout=30).status_code == 200
        log = server.log()
    assert "falling back to in-memory storage" in log
    assert "Traceback" not in log


# --- agents' waiting polls: a cap per agent, and a share kept for customers --------------

def agent_feed(server, agent, timeout=60):
    return requests.get(f"{server.url}/api/agent/events", params={"wait": WAIT},
                        headers={"Authorization": f"Bearer {agent.token}"}, timeout=timeout)


def walk_away_from_feed(server, agent):
    """A feed poll that the client gives up on: it goes on waiting on the server."""
    with contextlib.suppress(requests.Timeout):
        agent_feed(server, agent, timeout=0.5)


def answers_at_once_with_retry_after(answer):
    assert answer.status_code == 200, answer.text
    page = answer.json()["data"]
    assert page["events"] == []
    assert 2 <= page["retry_after"] <= 6
    assert answer.headers["Retry-After"] == str(page["retry_after"])


@pytest.mark.slow
def test_agents_cannot_take_the_waiting_slots_of_customers_on_a_real_server(
        tmp_path, database_url, app):
    """Of 6 slots agents may hold half (3), one agent at most 2: the third poll of an agent,
    and any agent's poll past the share, answers at once; customers still wait."""
    alice, bob, carol = (new_agent(app, name) for name in ("alice", "bob", "carol"))
    customers = [new_customer(app) for _ in range(2)]
    chat_ids = [customer.create() for customer in customers]
    release_database()
    settings = {"LONGPOLL_MAX_WAITERS": "6", "LONGPOLL_MAX_WAITERS_PER_AGENT": "2",
                "LONGPOLL_AGENT_SHARE_PERCENT": "50"}
    with running_server(tmp_path, database_url, command=WATCHED_SERVER, env=settings) as server:
        for _ in range(2):
            walk_away_from_feed(server, alice)
        wait_until(lambda: len(stepped_out(server)) == 2, what="two of alice's polls to wait")
        answers_at_once_with_retry_after(agent_feed(server, alice, timeout=WAIT / 2))

        walk_away_from_feed(server, bob)
        wait_until(lambda: len(stepped_out(server)) == 3, what="bob's poll to wait")
        # The agents' share (3) is taken: carol, under her own cap, may not wait either.
        answers_at_once_with_retry_after(agent_feed(server, carol, timeout=WAIT / 2))

        # The three slots past the agents' share are the customers'.
        for customer, chat_id in zip(customers, chat_ids, strict=True):
            with contextlib.suppress(requests.Timeout):
                live_post(requests, server.url, "messages", customer.email, customer.token,
                          {"chat_id": chat_id, "after": 1, "wait": WAIT}, timeout=0.5)
        wait_until(lambda: len(stepped_out(server)) == 5, what="the customers' polls to wait")
