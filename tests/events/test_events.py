"""The event log and the agent feed, `GET /api/agent/events`: every change that committed has
its event, ids never skip or repeat for a reader that follows them, and a cursor older than
the events kept is refused instead of silently skipping."""
import json
import threading
import time

import pytest
import requests

from support.helpers import (
    assert_error,
    new_agent,
    new_customer,
    release_database,
    running_server,
    seed_customers,
    wait_until,
)
from support.many_polls import wait_for_waiting

EVENTS = "/events"


def feed(agent, **params):
    response = agent.get(EVENTS, **params)
    assert response.status_code == 200, response.json
    return response.json["data"]


def all_events(agent):
    return feed(agent, after=0)["events"]


@pytest.fixture
def agent(app, client):
    return new_agent(app, "ann", display_name="Ann", client=client)


@pytest.fixture
def customer(app, client):
    return new_customer(app, email="pat@example.com", name="Pat", client=client)


def test_each_change_writes_its_event_with_what_a_receiver_needs(app, agent, customer):
    chat_id = customer.create("Hello", name="Pro plan", plan_id=7,
                              image_url="https://example.com/a.png")
    assert agent.reply(chat_id, "Hi Pat").status_code == 200
    assert customer.read(chat_id, 2).status_code == 200
    assert agent.post(f"/chats/{chat_id}/read", {"seq": 2}).status_code == 200
    assert agent.post(f"/chats/{chat_id}/close").status_code == 200
    assert agent.post(f"/chats/{chat_id}/reopen").status_code == 200
    assert customer.close(chat_id).status_code == 200

    events = all_events(agent)
    assert [event["id"] for event in events] == list(range(1, 9))
    assert [event["type"] for event in events] == [
        "chat.created", "message.created", "message.created", "chat.read", "chat.read",
        "chat.closed", "chat.reopened", "chat.closed"]
    chat = {"chatId": chat_id, "status": "open", "name": "Pro plan", "plan_id": 7,
            "customer": {"email": "pat@example.com", "name": "Pat"}}
    assert all(set(event) == {"id", "type", "created_at", "data"} for event in events)
    assert events[0]["data"] == {"chat": chat}
    first, reply = events[1]["data"]["message"], events[2]["data"]["message"]
    assert events[1]["data"]["chat"] == chat
    assert {key: first[key] for key in ("seq", "sender", "message", "image_url", "agent")} == {
        "seq": 1, "sender": "user", "message": "Hello",
        "image_url": "https://example.com/a.png", "agent": None}
    assert first["messageId"].startswith("msg-") and first["created_at"].endswith("Z")
    assert {key: reply[key] for key in ("seq", "sender", "message", "agent")} == {
        "seq": 2, "sender": "agent", "message": "Hi Pat",
        "agent": {"name": "ann", "display_name": "Ann"}}
    assert events[3]["data"]["by"] == {"type": "customer"}
    assert events[4]["data"]["by"] == {"type": "agent", "name": "ann", "display_name": "Ann"}
    assert events[3]["data"]["read_seq"] == events[4]["data"]["read_seq"] == 2
    assert events[5]["data"]["chat"]["status"] == "closed"
    assert events[5]["data"]["by"]["type"] == "agent"
    assert events[6]["data"]["chat"]["status"] == "open"
    assert events[7]["data"]["by"] == {"type": "customer"}
    text = json.dumps(events)
    assert customer.uuid not in text and agent.token not in text


def test_a_change_that_did_not_happen_writes_no_event(app, agent, customer):
    chat_id = customer.create()
    assert customer.read(chat_id, 1).status_code == 200
    before = feed(agent)["next_after"]
    # Nothing moved: the same read mark again, a close twice, a send into a closed chat, a
    # read mark past the end, a replayed retry.
    assert customer.read(chat_id, 1).status_code == 200
    assert customer.read(chat_id, 0).status_code == 200
    assert customer.close(chat_id).status_code == 200
    assert customer.close(chat_id).status_code == 200
    assert_error(customer.send(chat_id), 409, "chat_closed")
    assert agent.post(f"/chats/{chat_id}/read", {"seq": 9}).status_code == 400
    assert agent.post(f"/chats/{chat_id}/reopen").status_code == 200
    key = {"Idempotency-Key": "once"}
    assert agent.reply(chat_id, headers=key).status_code == 200
    assert agent.reply(chat_id, headers=key).headers["Idempotent-Replayed"] == "true"
    events = feed(agent, after=before)["events"]
    assert [event["type"] for event in events] == [
        "chat.closed", "chat.reopened", "message.created"]
    assert [event["id"] for event in events] == [before + 1, before + 2, before + 3]


def test_a_rolled_back_change_leaves_no_event_and_no_gap(make_app):
    app = make_app(MAX_OPEN_CHATS=1)
    client = app.test_client()
    agent = new_agent(app, "ann", client=client)
    customer = new_customer(app, client=client)
    customer.create()
    refused = customer.post("/api/client/live/create", {"created_at": 1, "message": "again"})
    assert_error(refused, 409, "too_many_open_chats")
    other = new_customer(app, client=client)
    other.create()
    assert [event["id"] for event in all_events(agent)] == [1, 2, 3, 4]


def test_without_after_the_feed_starts_at_the_newest_event(agent, customer):
    customer.create()
    page = feed(agent)
    assert page == {"events": [], "next_after": 2, "has_more": False}


def test_pages_follow_the_limit_and_say_when_more_wait(agent, customer):
    chat_id = customer.create()
    for _ in range(4):
        customer.send(chat_id)
    first = feed(agent, after=0, limit=4)
    assert [event["id"] for event in first["events"]] == [1, 2, 3, 4]
    assert first["has_more"] is True and first["next_after"] == 4
    rest = feed(agent, after=first["next_after"], limit=4)
    assert [event["id"] for event in rest["events"]] == [5, 6]
    assert rest["has_more"] is False


def test_a_page_stays_within_the_byte_bound_but_always_holds_one_event(make_app):
    app = make_app(MAX_POLL_PAGE_BYTES=4096)
    client = app.test_client()
    agent = new_agent(app, "ann", client=client)
    customer = new_customer(app, client=client)
    chat_id = customer.create()
    for _ in range(3):
        customer.send(chat_id, "x" * 3000)
    page = feed(agent, after=2)
    assert [event["id"] for event in page["events"]] == [3]
    assert page["has_more"] is True


def test_a_waiting_feed_answers_when_an_event_is_written(app, agent, customer):
    chat_id = customer.create()
    answers = []
    waiting = threading.Thread(target=lambda: answers.append(
        new_agent_client(app, agent).get(EVENTS, after=2, wait=20)))
    started = time.monotonic()
    waiting.start()
    wait_until(lambda: app_waiting(app) == 1, what="the feed to wait")
    customer.send(chat_id, "news")
    waiting.join(20)
    assert time.monotonic() - started < 15
    events = answers[0].json["data"]["events"]
    assert [(event["id"], event["data"]["message"]["message"]) for event in events] == [
        (3, "news")]


def new_agent_client(app, agent):
    """The same agent on a test client of its own (a thread's)."""
    return type(agent)(agent.name, agent.token, app.test_client())


def app_waiting(app):
    return app.test_client().get("/healthz").json["data"]["long_polls"]["waiting"]


def test_a_feed_with_nothing_new_answers_when_its_wait_runs_out(agent, customer):
    customer.create()
    started = time.monotonic()
    page = feed(agent, after=2, wait=0.5)
    assert time.monotonic() - started >= 0.5
    assert page == {"events": [], "next_after": 2, "has_more": False}


@pytest.mark.parametrize("after", ["-1", "x", "1.5", "\uff11", str(2**63)])
def test_a_bad_cursor_is_a_validation_error(agent, after):
    response = agent.get(EVENTS, after=after)
    assert_error(response, 400, "validation_error")
    assert "after" in response.json["error"]["fields"]


def test_a_cursor_beyond_the_newest_event_has_expired(agent, customer):
    customer.create()
    assert_error(agent.get(EVENTS, after=3), 410, "cursor_expired")


def test_events_older_than_the_retention_are_purged_and_their_cursors_expire(make_app):
    app = make_app(EVENT_RETENTION_DAYS=1 / 86400)  # one second
    client = app.test_client()
    agent = new_agent(app, "ann", client=client)
    customer = new_customer(app, client=client)
    customer.create()
    time.sleep(1.2)  # the events' age, not a guess at how long anything takes
    release_database()
    app = make_app(EVENT_RETENTION_DAYS=1 / 86400)  # a start purges at once
    agent = new_agent_client(app, agent)
    wait_until(lambda: agent.get(EVENTS, after=0).status_code == 410,
               what="the purge of the old events")
    assert_error(agent.get(EVENTS, after=1), 410, "cursor_expired")
    assert feed(agent, after=2) == {"events": [], "next_after": 2, "has_more": False}
    chat_id = new_customer(app, client=app.test_client()).create()
    assert [event["data"]["chat"]["chatId"] for event in feed(agent, after=2)["events"]] == [
        chat_id, chat_id]


def test_the_feed_needs_an_agent_token(client, customer):
    assert_error(client.get(f"/api/agent{EVENTS}"), 401, "unauthorized")
    assert_error(client.get(f"/api/agent{EVENTS}", headers=customer.headers), 401,
                 "unauthorized")


# --- many writers, one reader, a real server ---------------------------------------------

WRITERS = 8
ROUNDS = 12


def write_a_conversation(server, email, token, agent_token, written):
    """One writer: a chat, then rounds of a customer message, an agent reply and both read
    marks, then a close and a reopen. Appends its chat id and message ids to `written`."""
    session = requests.Session()
    agent = {"Authorization": f"Bearer {agent_token}"}

    def customer(path, **data):
        response = session.post(f"{server.url}/api/client/live/{path}", timeout=30,
                                json={"data": {"email": email, **data}},
                                headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        return response.json()["data"]

    def as_agent(path, data=None):
        response = session.post(f"{server.url}/api/agent/chats/{path}", timeout=30,
                                json={"data": data} if data is not None else None,
                                headers=agent)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    created = customer("create", created_at=1, message="round 0")
    chat_id, messages = created["chatId"], [created["messageId"]]
    for number in range(1, ROUNDS + 1):
        messages.append(customer("chat", chat_id=chat_id, message=f"round {number}")
                        ["messageId"])
        reply = as_agent(f"{chat_id}/messages", {"message": f"reply {number}"})
        messages.append(reply["messageId"])
        customer("read", chat_id=chat_id, seq=reply["seq"])
        as_agent(f"{chat_id}/read", {"seq": reply["seq"]})
    as_agent(f"{chat_id}/close")
    as_agent(f"{chat_id}/reopen")
    written.append((chat_id, messages))


def follow(server, agent_token, stop_when, pause_at=None):
    """Follow the feed from the start until `stop_when(cursor)`, checking that every page
    starts right after the cursor and has no gap; pauses 1 s once the cursor passes
    `pause_at`. The events seen, in order."""
    session = requests.Session()
    seen, after, paused = [], 0, False
    while not stop_when(after):
        response = session.get(f"{server.url}/api/agent/events", timeout=30,
                               params={"after": after, "wait": 2, "limit": 37},
                               headers={"Authorization": f"Bearer {agent_token}"})
        assert response.status_code == 200, response.text
        page = response.json()["data"]
        ids = [event["id"] for event in page["events"]]
        assert ids == list(range(after + 1, after + 1 + len(ids))), (after, ids)
        seen += page["events"]
        after = page["next_after"]
        if pause_at is not None and after >= pause_at and not paused:
            paused = True
            time.sleep(1)  # the agent looks away while the writers go on
    return seen


@pytest.mark.slow
def test_a_follower_sees_every_event_once_in_order_while_eight_writers_work(
        tmp_path, database_url, app):
    customers = seed_customers(app, WRITERS)
    agent = new_agent(app, "ann")
    release_database()
    per_writer = 2 + ROUNDS * 4 + 2
    total = WRITERS * per_writer
    with running_server(tmp_path, database_url, env={"WAITRESS_THREADS": "16"}) as server:
        written = []
        writers = [threading.Thread(target=write_a_conversation,
                                    args=(server, email, token, agent.token, written))
                   for email, token in customers]
        seen = []
        follower = threading.Thread(target=lambda: seen.extend(follow(
            server, agent.token, lambda after: after >= total, pause_at=total // 3)))
        follower.start()
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join(120)
        follower.join(120)
        assert len(written) == WRITERS
        newest = requests.get(f"{server.url}/api/agent/events", timeout=10,
                              headers={"Authorization": f"Bearer {agent.token}"}).json()
    assert newest["data"]["next_after"] == total
    assert [event["id"] for event in seen] == list(range(1, total + 1))
    for chat_id, messages in written:
        of_chat = [event for event in seen if event["data"]["chat"]["chatId"] == chat_id]
        assert len(of_chat) == per_writer
        sent = [event["data"]["message"] for event in of_chat
                if event["type"] == "message.created"]
        assert [message["messageId"] for message in sent] == messages
        assert [message["seq"] for message in sent] == list(range(1, len(messages) + 1))
        assert [event["type"] for event in of_chat[-2:]] == ["chat.closed", "chat.reopened"]


@pytest.mark.slow
def test_a_waiting_feed_wakes_when_another_instance_writes_an_event(tmp_path, database_url,
                                                                    app):
    (email, token), = seed_customers(app, 1)
    agent = new_agent(app, "ann")
    release_database()
    with running_server(tmp_path, database_url) as one, \
            running_server(tmp_path, database_url) as two:
        answers = []

        def follow_on_two():
            started = time.monotonic()
            response = requests.get(f"{two.url}/api/agent/events", timeout=30,
                                    params={"after": 0, "wait": 20},
                                    headers={"Authorization": f"Bearer {agent.token}"})
            answers.append((response, time.monotonic() - started))

        waiting = threading.Thread(target=follow_on_two)
        waiting.start()
        wait_for_waiting(two, 1)  # the feed, on two
        written = time.monotonic()
        response = requests.post(f"{one.url}/api/client/live/create", timeout=30,
                                 json={"data": {"email": email, "created_at": 1,
                                                "message": "hello"}},
                                 headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        waiting.join(30)
    (answer, took), = answers
    assert [event["type"] for event in answer.json()["data"]["events"]] == [
        "chat.created", "message.created"]
    assert time.monotonic() - written < 10 and took < 15  # woken, not timed out after 20 s
