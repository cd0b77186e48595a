"""Polling for messages: a gap-free forward cursor, and long-polls that wake promptly."""
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from support.helpers import assert_error, new_customer, wait_until

WAIT = 20  # seconds a poll may wait here; a woken poll answers well before that


def test_cursor_pages_through_in_order(customer, agent):
    chat_id = customer.create("m1")
    for number in range(2, 8):
        sender = agent.reply if number % 2 else customer.send
        assert sender(chat_id, f"m{number}").status_code == 200

    seen, after = [], 0
    while True:
        page = customer.poll(chat_id, after=after, limit=3).json["data"]
        seen += [m["message"] for m in page["messages"]]
        assert page["next_after"] == (page["messages"][-1]["seq"] if page["messages"] else after)
        after = page["next_after"]
        if not page["has_more"]:
            break
    assert seen == [f"m{n}" for n in range(1, 8)]

    empty = customer.poll(chat_id, after=7).json["data"]
    assert empty["messages"] == [] and empty["next_after"] == 7 and empty["has_more"] is False


def test_message_shape(customer):
    chat_id = customer.create("look", image_url="https://example.com/a.png")
    [message] = customer.poll(chat_id).json["data"]["messages"]
    assert set(message) == {"messageId", "seq", "sender", "message", "image_url", "created_at",
                            "agent_name"}
    assert message["image_url"] == "https://example.com/a.png"
    assert message["created_at"].endswith("Z") and "T" in message["created_at"]


@pytest.mark.parametrize("field,value", [
    ("after", -1), ("after", "1"), ("after", 1.5), ("limit", 0), ("limit", 101),
    ("limit", True), ("wait", -1), ("wait", 26), ("wait", "1"), ("chat_id", None),
])
def test_poll_validation(customer, field, value):
    data = {"chat_id": customer.create(), field: value}
    response = customer.post("/api/client/live/messages", data)
    body = assert_error(response, 400, "validation_error")
    assert list(body["error"]["fields"]) == [field]


def test_poll_of_another_users_chat_is_not_found(make_customer):
    alice, bob = make_customer(), make_customer()
    chat_id = alice.create()
    foreign = bob.poll(chat_id)
    assert_error(foreign, 404, "chat_not_found")
    assert foreign.get_data() == bob.poll("chat-nothing-here").get_data()


def test_long_poll_wakes_on_a_new_message(customer, agent, waiting):
    chat_id = customer.create()
    with ThreadPoolExecutor(1) as pool:
        poll = pool.submit(customer.poll, chat_id, after=1, wait=WAIT)
        wait_until(lambda: waiting, what="the poll to wait")
        replied = time.monotonic()
        agent.reply(chat_id, "here I am")
        page = poll.result(timeout=60).json["data"]
    assert [m["message"] for m in page["messages"]] == ["here I am"]
    assert time.monotonic() - replied < WAIT / 2


def test_agent_long_poll_wakes_on_customer_message(customer, agent, waiting):
    chat_id = customer.create()
    with ThreadPoolExecutor(1) as pool:
        poll = pool.submit(agent.get, f"/chats/{chat_id}/messages", after=1, wait=WAIT)
        wait_until(lambda: waiting, what="the poll to wait")
        sent = time.monotonic()
        customer.send(chat_id, "are you there?")
        page = poll.result(timeout=60).json["data"]
    assert [m["message"] for m in page["messages"]] == ["are you there?"]
    assert time.monotonic() - sent < WAIT / 2


@pytest.mark.slow
def test_long_poll_answers_empty_after_its_wait(customer):
    chat_id = customer.create()
    started = time.monotonic()
    page = customer.poll(chat_id, after=1, wait=1).json["data"]  # waits its 1 s out: the point
    assert page["messages"] == [] and page["next_after"] == 1
    assert 0.9 < time.monotonic() - started < 10


def test_long_poll_returns_at_once_when_messages_exist(customer, waiting):
    chat_id = customer.create()
    started = time.monotonic()
    assert len(customer.poll(chat_id, after=0, wait=WAIT).json["data"]["messages"]) == 1
    assert time.monotonic() - started < WAIT / 2
    assert waiting == []


@pytest.mark.slow
def test_waiter_cap_answers_at_once_beyond_it(make_app, waiting):
    app = make_app(LONGPOLL_MAX_WAITERS=1)
    customer = new_customer(app)
    chat_id = customer.create()

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(customer.poll, chat_id, after=1, wait=WAIT)
        wait_until(lambda: waiting, what="the first poll to wait")  # it holds the only slot
        started = time.monotonic()
        turned_away = customer.poll(chat_id, after=1, wait=WAIT)
        page = turned_away.json["data"]
        assert turned_away.status_code == 200 and page["messages"] == []
        assert time.monotonic() - started < WAIT / 2
        assert len(set(waiting)) == 1  # the second poll never waited
        # ... and was told when to come back, in the answer and in the header
        assert 2 <= page["retry_after"] <= 6
        assert turned_away.headers["Retry-After"] == str(page["retry_after"])
        customer.send(chat_id, "wake up")
        assert len(first.result(timeout=60).json["data"]["messages"]) == 1
    # The slot is free again: waiting works once more.
    started = time.monotonic()
    waited = customer.poll(chat_id, after=2, wait=1)  # waits its 1 s out: the point
    assert time.monotonic() - started >= 0.9
    assert "retry_after" not in waited.json["data"] and "Retry-After" not in waited.headers


def test_agent_poll_validation(agent, customer):
    chat_id = customer.create()
    for params, field in [({"after": "x"}, "after"), ({"limit": "500"}, "limit"),
                          ({"wait": "nan"}, "wait"), ({"bogus": "1"}, "bogus")]:
        body = assert_error(agent.get(f"/chats/{chat_id}/messages", **params), 400,
                            "validation_error")
        assert list(body["error"]["fields"]) == [field]
    assert_error(agent.get("/chats/chat-missing/messages"), 404, "chat_not_found")
    assert_error(agent.get("/chats/" + "x" * 200 + "/messages"), 404, "chat_not_found")
    assert_error(agent.get("/chats/chat%00nul/messages"), 404, "chat_not_found")


def test_long_poll_wakes_when_the_chat_is_closed(customer, agent, waiting):
    chat_id = customer.create()
    with ThreadPoolExecutor(1) as pool:
        poll = pool.submit(customer.poll, chat_id, after=1, wait=WAIT)
        wait_until(lambda: waiting, what="the poll to wait")
        closed = time.monotonic()
        agent.post(f"/chats/{chat_id}/close")
        page = poll.result(timeout=60).json["data"]
    assert page["status"] == "closed" and page["messages"] == []
    assert time.monotonic() - closed < WAIT / 2
