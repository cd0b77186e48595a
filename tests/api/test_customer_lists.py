"""The customer's chat list and read marks."""
import base64

import pytest
import requests

from support.helpers import assert_error, live_post, new_customer, release_database, running_server


def test_list_shows_own_chats_newest_activity_first(make_customer, agent):
    alice, bob = make_customer(), make_customer()
    first = alice.create("first")
    second = alice.create("second")
    bob.create("not alice's")
    alice.send(first, "bump " + "x" * 300)

    data = alice.list().json["data"]
    assert [c["chatId"] for c in data["chats"]] == [first, second]
    assert data["has_more"] is False and data["next_before"] is None
    top = data["chats"][0]
    assert set(top) == {"chatId", "status", "created_at", "updated_at", "last_message", "unread"}
    assert top["last_message"]["seq"] == 2
    assert top["last_message"]["sender"] == "user"
    assert top["last_message"]["preview"] == ("bump " + "x" * 300)[:200]
    assert top["unread"] == 0


def test_list_pages_with_a_cursor_and_filters_status(customer):
    chat_ids = [customer.create(f"chat {n}") for n in range(5)]
    customer.close(chat_ids[1])

    seen, before = [], None
    while True:
        data = customer.list(limit=2, **({"before": before} if before else {})).json["data"]
        seen += [c["chatId"] for c in data["chats"]]
        before = data["next_before"]
        if not before:
            break
    assert seen == [chat_ids[1], chat_ids[4], chat_ids[3], chat_ids[2], chat_ids[0]]

    closed = customer.list(status="closed").json["data"]["chats"]
    assert [c["chatId"] for c in closed] == [chat_ids[1]]
    opened = customer.list(status="open").json["data"]["chats"]
    assert chat_ids[1] not in [c["chatId"] for c in opened] and len(opened) == 4


@pytest.mark.parametrize("data,field", [
    ({"status": "archived"}, "status"), ({"limit": 0}, "limit"), ({"limit": 101}, "limit"),
    ({"before": "%%%"}, "before"), ({"before": ""}, "before"), ({"chat_id": "x"}, "chat_id"),
])
def test_list_validation(customer, data, field):
    body = assert_error(customer.list(**data), 400, "validation_error")
    assert list(body["error"]["fields"]) == [field]


@pytest.mark.parametrize("raw", ["2026-01-01T00:00:00|" + "9" * 30, "2026-01-01T00:00:00|0",
                                 "2026-01-01T00:00:00+05:00|3", "2026-01-01T00:00:00",
                                 "not a time|3"])
def test_forged_cursors_are_validation_errors(customer, raw):
    cursor = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    body = assert_error(customer.list(before=cursor), 400, "validation_error")
    assert body["error"]["fields"] == {"before": ["Not a valid cursor."]}


def test_unread_counts_agent_messages_after_the_read_mark(customer, agent):
    chat_id = customer.create()
    for text in ["one", "two", "three"]:
        agent.reply(chat_id, text)
    customer.send(chat_id, "mine")  # the customer's own messages are never unread for them
    assert customer.list().json["data"]["chats"][0]["unread"] == 3

    assert customer.read(chat_id, 3).json["data"] == {"chatId": chat_id, "read_seq": 3,
                                                      "unread": 1}
    # Never backward:
    assert customer.read(chat_id, 1).json["data"]["read_seq"] == 3
    assert customer.list().json["data"]["chats"][0]["unread"] == 1
    assert customer.read(chat_id, 5).json["data"]["unread"] == 0


@pytest.mark.parametrize("seq", [6, -1, "2", None, 1.5])
def test_read_mark_validation(customer, seq):
    chat_id = customer.create()
    for text in ["a", "b", "c", "d"]:
        customer.send(chat_id, text)
    body = assert_error(customer.read(chat_id, seq), 400, "validation_error")
    assert list(body["error"]["fields"]) == ["seq"]


def test_read_mark_of_another_users_chat_is_not_found(make_customer):
    alice, bob = make_customer(), make_customer()
    chat_id = alice.create()
    assert_error(bob.read(chat_id, 1), 404, "chat_not_found")


def decoded(cursor):
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()


@pytest.mark.slow
def test_a_cursor_reveals_no_internal_id_on_a_real_server(tmp_path, database_url, app):
    """A cursor names the last chat of its page by the id the customer already sees, and its
    time: nothing from which to count the chats of the system."""
    others = [new_customer(app) for _ in range(3)]
    for other in others:
        other.create("someone else's")
    customer = new_customer(app)
    chat_ids = [customer.create(f"chat {number}") for number in range(3)]
    release_database()
    with running_server(tmp_path, database_url) as server:
        seen, before = [], None
        while True:
            page = live_post(requests, server.url, "list", customer.email, customer.token,
                             {"limit": 1, **({"before": before} if before else {})})
            data = page.json()["data"]
            seen += [chat["chatId"] for chat in data["chats"]]
            before = data["next_before"]
            if before is None:
                break
            stamp, last_chat = decoded(before).split("|")
            assert last_chat == data["chats"][-1]["chatId"]
            assert stamp.startswith(data["chats"][-1]["updated_at"][:19])
    assert seen == chat_ids[::-1]
