"""The agents' workspace through the agent API: assignment and the inbox's lists and counts,
internal notes (never visible to the customer), saved replies, and the customer beside a
chat."""
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from chat import accounts
from support.helpers import (
    assert_error,
    new_agent,
    new_customer,
    release_database,
    running_server,
    wait_until,
)
from support.receiver import Receiver


@pytest.fixture
def ann(app, client):
    return new_agent(app, "ann", display_name="Ann", client=client)


@pytest.fixture
def bob(app, client):
    return new_agent(app, "bob", client=client)


@pytest.fixture
def pat(app, client):
    return new_customer(app, email="pat@example.com", name="Pat", client=client)


def ok(response):
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.json
    assert body["status"] == "success" and body["error"] is None
    return body["data"]


def chat_ids(agent, **params):
    return [chat["chatId"] for chat in ok(agent.get("/chats", **params))["chats"]]


def events_of(agent, *types):
    return [event for event in ok(agent.get("/events", after=0))["events"]
            if event["type"] in types]


def put_reply(client, agent, shortcut, text):
    return client.put(f"/api/agent/replies/{shortcut}", json={"data": {"text": text}},
                      headers=agent.headers)


# --- assignment ------------------------------------------------------------------------------

def test_assigning_moves_a_chat_between_the_tabs_and_writes_one_event(ann, bob, pat):
    chat_id = pat.create("Hello")
    assert ok(ann.get(f"/chats/{chat_id}"))["assignee"] is None
    assert chat_ids(ann, assignee="none") == [chat_id]
    assert chat_ids(ann, assignee="me") == []

    answer = ok(ann.post(f"/chats/{chat_id}/assign", {"agent": "ann"}))
    assert answer == {"chatId": chat_id, "assignee": {"name": "ann", "display_name": "Ann"}}
    assert ok(ann.get(f"/chats/{chat_id}"))["assignee"] == {"name": "ann",
                                                             "display_name": "Ann"}
    assert chat_ids(ann, assignee="me") == [chat_id]
    assert chat_ids(ann, assignee="ann") == [chat_id]
    assert chat_ids(ann, assignee="none") == []
    assert chat_ids(bob, assignee="me") == []
    assert chat_ids(ann, assignee="any") == chat_ids(ann) == [chat_id]

    ok(ann.post(f"/chats/{chat_id}/assign", {"agent": "ann"}))  # again: nothing changes
    ok(ann.post(f"/chats/{chat_id}/assign", {"agent": "bob"}))
    assert chat_ids(bob, assignee="me") == [chat_id]
    unassigned = ok(bob.post(f"/chats/{chat_id}/assign", {"agent": None}))
    assert unassigned == {"chatId": chat_id, "assignee": None}
    assert chat_ids(ann, assignee="none") == [chat_id]

    assigned = events_of(ann, "chat.assigned")
    assert [(event["data"]["assignee"], event["data"]["by"]["name"]) for event in assigned] == [
        ({"name": "ann", "display_name": "Ann"}, "ann"),
        ({"name": "bob", "display_name": None}, "ann"),
        (None, "bob")]
    assert assigned[0]["data"]["chat"]["chatId"] == chat_id


def test_assigning_to_an_unknown_or_removed_agent_is_refused(app, ann, pat):
    chat_id = pat.create("Hello")
    new_agent(app, "gone")
    with app.app_context():
        accounts.remove_agent("gone")
    for name in ("nobody", "gone", "ANN", "ann "):
        body = assert_error(ann.post(f"/chats/{chat_id}/assign", {"agent": name}), 400,
                            "validation_error")
        assert body["error"]["fields"] == {"agent": ["No active agent has that name."]}
    for data in ({}, {"agent": ""}, {"agent": 7}, {"agent": "x" * 65}):
        assert_error(ann.post(f"/chats/{chat_id}/assign", data), 400, "validation_error")
    assert_error(ann.post("/chats/chat-nothing/assign", {"agent": "ann"}), 404,
                 "chat_not_found")
    assert ok(ann.get(f"/chats/{chat_id}"))["assignee"] is None
    assert events_of(ann, "chat.assigned") == []


def test_a_removed_agents_chats_stay_theirs_and_can_be_listed(app, ann, pat):
    chat_id = pat.create("Hello")
    new_agent(app, "carl")
    ok(ann.post(f"/chats/{chat_id}/assign", {"agent": "carl"}))
    with app.app_context():
        accounts.remove_agent("carl")
    assert chat_ids(ann, assignee="carl") == [chat_id]
    body = assert_error(ann.get("/chats", assignee="never-was"), 400, "validation_error")
    assert list(body["error"]["fields"]) == ["assignee"]


def test_counts_cover_open_chats_in_each_tab_with_their_unread_messages(app, client, ann, bob,
                                                                          pat):
    sam = new_customer(app, email="sam@example.com", client=client)
    mine = pat.create("One")
    pat.send(mine, "Two")
    theirs = sam.create("Three")
    nobodys = sam.create("Four")
    closed = pat.create("Five")
    ok(ann.post(f"/chats/{closed}/close"))
    ok(ann.post(f"/chats/{mine}/assign", {"agent": "ann"}))
    ok(ann.post(f"/chats/{theirs}/assign", {"agent": "bob"}))

    assert ok(ann.get("/chats/counts")) == {
        "mine": 1, "unassigned": 1, "all": 3,
        "unread": {"mine": 2, "unassigned": 1, "all": 4}}
    assert ok(bob.get("/chats/counts"))["unread"] == {"mine": 1, "unassigned": 1, "all": 4}

    ok(ann.post(f"/chats/{mine}/read", {"seq": 2}))
    ann.reply(nobodys, "Hi")  # a reply is no unread message for the agents
    assert ok(ann.get("/chats/counts")) == {
        "mine": 1, "unassigned": 1, "all": 3,
        "unread": {"mine": 0, "unassigned": 1, "all": 2}}


def test_the_waiting_list_holds_chats_whose_customer_spoke_last_longest_first(app, client,
                                                                             ann, pat):
    sam = new_customer(app, email="sam@example.com", client=client)
    first = pat.create("First")
    answered = sam.create("Second")
    third = sam.create("Third")
    ann.reply(answered, "Done")
    assert chat_ids(ann, sort="waiting") == [first, third]
    assert chat_ids(ann, sort="recent") == [answered, third, first]

    chats = {chat["chatId"]: chat for chat in ok(ann.get("/chats"))["chats"]}
    assert chats[answered]["waiting_since"] is None
    assert chats[first]["waiting_since"] == chats[first]["created_at"]

    # A second message keeps the wait's start; a note does not end the wait; a reply does.
    pat.send(first, "Anyone?")
    ok(ann.post(f"/chats/{first}/notes", {"message": "Checking with billing"}))
    waiting = ok(ann.get("/chats", sort="waiting"))["chats"]
    assert [chat["chatId"] for chat in waiting] == [first, third]
    assert waiting[0]["waiting_since"] == chats[first]["waiting_since"]
    ann.reply(first, "Here")
    sam.send(answered, "One more thing")
    assert chat_ids(ann, sort="waiting") == [third, answered]


def test_the_waiting_list_pages_without_gaps_and_refuses_a_recent_cursor(app, client, ann):
    customers = [new_customer(app, client=client) for _ in range(5)]
    created = [customer.create("Hello") for customer in customers]
    seen, before = [], None
    while True:
        params = {"sort": "waiting", "limit": 2, **({"before": before} if before else {})}
        page = ok(ann.get("/chats", **params))
        seen += [chat["chatId"] for chat in page["chats"]]
        if not page["has_more"]:
            break
        before = page["next_before"]
    assert seen == created

    recent_cursor = ok(ann.get("/chats", limit=1))["next_before"]
    for cursor in (recent_cursor, "bm90IGEgY3Vyc29y"):
        body = assert_error(ann.get("/chats", sort="waiting", before=cursor), 400,
                            "validation_error")
        assert body["error"]["fields"] == {"before": ["Not a valid cursor."]}
    waiting_cursor = ok(ann.get("/chats", sort="waiting", limit=1))["next_before"]
    assert_error(ann.get("/chats", before=waiting_cursor), 400, "validation_error")
    assert_error(ann.get("/chats", sort="oldest"), 400, "validation_error")


# --- notes -------------------------------------------------------------------------------------

def test_a_note_is_never_visible_to_the_customer(ann, pat):
    chat_id = pat.create("Hello")
    ann.reply(chat_id, "Hi Pat")
    before = ok(pat.list())["chats"][0]
    written = ok(ann.post(f"/chats/{chat_id}/notes", {"message": "VIP: be quick"}))
    assert written["chatId"] == chat_id and written["after_seq"] == 2
    assert written["noteId"].startswith("note-")

    # Not in the poll, not as a gap in seq, not in the list's preview, unread or updated_at.
    pat.send(chat_id, "Thanks")
    ann.reply(chat_id, "Anytime")
    polled = ok(pat.poll(chat_id))["messages"]
    assert [(message["seq"], message["message"]) for message in polled] == [
        (1, "Hello"), (2, "Hi Pat"), (3, "Thanks"), (4, "Anytime")]
    just_before = ok(pat.list())["chats"][0]
    ok(ann.post(f"/chats/{chat_id}/notes", {"message": "Resolved"}))
    after = ok(pat.list())["chats"][0]
    assert after == just_before  # the same preview, unread count and updated_at
    assert after["last_message"]["preview"] == "Anytime"
    assert after["unread"] == 2 and before["unread"] == 1
    assert ok(pat.poll(chat_id, after=4))["messages"] == []
    assert ok(ann.get(f"/chats/{chat_id}"))["last_seq"] == 4
    everything = ok(pat.poll(chat_id)) | ok(pat.list())
    assert "VIP" not in str(everything) and "Resolved" not in str(everything)


def test_a_note_wakes_no_waiting_customer(client, ann, pat, waiting):
    """A customer's long-poll is woken by its chat's changes: a note is none of them."""
    chat_id = pat.create("Hello")
    woken = ok(client.get("/healthz"))["long_polls"]["woken"]
    with ThreadPoolExecutor(1) as pool:
        poll = pool.submit(pat.poll, chat_id, after=1, wait=2)
        wait_until(lambda: waiting, what="the customer's poll to wait")
        ok(ann.post(f"/chats/{chat_id}/notes", {"message": "internal"}))
        assert ok(poll.result(timeout=60))["messages"] == []
    assert ok(client.get("/healthz"))["long_polls"]["woken"] == woken


def test_agents_read_notes_in_order_with_their_author_and_in_the_feed(ann, bob, pat):
    chat_id = pat.create("Hello")
    ok(ann.post(f"/chats/{chat_id}/notes", {"message": "first"}))
    ok(bob.post(f"/chats/{chat_id}/notes", {"message": "second"}))
    ann.reply(chat_id, "Hi")
    ok(ann.post(f"/chats/{chat_id}/close"))
    ok(ann.post(f"/chats/{chat_id}/notes", {"message": "after closing"}))  # allowed

    page = ok(ann.get(f"/chats/{chat_id}/notes"))
    assert page["chatId"] == chat_id and page["has_more"] is False
    assert [(note["message"], note["after_seq"], note["agent"]) for note in page["notes"]] == [
        ("first", 1, {"name": "ann", "display_name": "Ann"}),
        ("second", 1, {"name": "bob", "display_name": None}),
        ("after closing", 2, {"name": "ann", "display_name": "Ann"})]
    first_two = ok(ann.get(f"/chats/{chat_id}/notes", limit=2))
    assert first_two["has_more"] is True
    rest = ok(ann.get(f"/chats/{chat_id}/notes", after=first_two["next_after"]))
    assert [note["message"] for note in rest["notes"]] == ["after closing"]
    assert ok(ann.get(f"/chats/{chat_id}/notes", after=rest["next_after"]))["notes"] == []

    noted = events_of(ann, "note.created")
    assert [event["data"]["note"] for event in noted] == page["notes"]
    assert noted[0]["data"]["chat"]["chatId"] == chat_id


def test_a_reader_following_the_notes_misses_none_written_at_once(make_app):
    """Notes written by several agents at once, read meanwhile by following `next_after`:
    each is seen exactly once (numbers commit in order, as a chat's seqs do)."""
    app = make_app(RATELIMIT_ENABLED=False)  # (the reader asks as fast as it can)
    ann = new_agent(app, "ann")
    chat_id = new_customer(app).create("Hello")
    writers = [new_agent(app, f"writer{number}") for number in range(4)]
    per_writer = 15
    total = len(writers) * per_writer

    def write(agent):
        for number in range(per_writer):
            ok(agent.post(f"/chats/{chat_id}/notes", {"message": f"{agent.name} {number}"}))

    seen, after = [], 0
    with ThreadPoolExecutor(len(writers)) as pool:
        done = [pool.submit(write, agent) for agent in writers]
        while len(seen) < total:
            time.sleep(0.01)  # the reading interval: a reader that never pauses starves writers
            page = ok(ann.get(f"/chats/{chat_id}/notes", after=after))
            seen += [note["message"] for note in page["notes"]]
            after = page["next_after"]
            if all(future.done() for future in done) and not page["has_more"]:
                for future in done:
                    future.result()  # (a writer's failure, raised here)
                if not page["notes"]:
                    break
    assert sorted(seen) == sorted(f"writer{w} {n}" for w in range(4) for n in range(15))


def test_a_note_retried_with_its_idempotency_key_is_written_once(ann, pat):
    chat_id = pat.create("Hello")
    key = {"Idempotency-Key": "note-1"}
    first = ann.post(f"/chats/{chat_id}/notes", {"message": "once"}, headers=key)
    again = ann.post(f"/chats/{chat_id}/notes", {"message": "once"}, headers=key)
    assert ok(first) == ok(again) and again.headers["Idempotent-Replayed"] == "true"
    assert len(ok(ann.get(f"/chats/{chat_id}/notes"))["notes"]) == 1
    assert_error(ann.post(f"/chats/{chat_id}/notes", {"message": "other"}, headers=key), 422,
                 "idempotency_key_reused")


@pytest.mark.parametrize("data", [{}, {"message": ""}, {"message": "   "}, {"message": 5},
                                  {"message": "x" * 10_001}, {"message": "ok", "extra": 1}])
def test_a_bad_note_is_refused(ann, pat, data):
    chat_id = pat.create("Hello")
    assert_error(ann.post(f"/chats/{chat_id}/notes", data), 400, "validation_error")
    assert ok(ann.get(f"/chats/{chat_id}/notes"))["notes"] == []


def test_notes_of_a_chat_that_does_not_exist_are_not_found(ann):
    assert_error(ann.post("/chats/chat-nothing/notes", {"message": "x"}), 404,
                 "chat_not_found")
    assert_error(ann.get("/chats/chat-nothing/notes"), 404, "chat_not_found")
    assert_error(ann.get("/chats/chat-%00/notes"), 404, "chat_not_found")


@pytest.mark.parametrize("include", [False, True])
def test_webhooks_get_notes_only_when_told_to(make_app, include):
    receiver = Receiver()
    receiver.start()
    try:
        app = make_app(WEBHOOK_URL=receiver.url, WEBHOOK_SECRET="s" * 40,
                       WEBHOOK_FIRST_RETRY_SECONDS=0.05, WEBHOOK_INCLUDE_NOTES=include)
        client = app.test_client()
        agent = new_agent(app, "ann", client=client)
        customer = new_customer(app, client=client)
        chat_id = customer.create("Hello")
        ok(agent.post(f"/chats/{chat_id}/notes", {"message": "internal"}))
        agent.reply(chat_id, "Hi")  # the last event: once it arrives, the note's would have
        wait_until(lambda: 4 in receiver.delivered_ids(), what="the reply's delivery")
        types = [request.event_type for request in
                 sorted(receiver.requests(), key=lambda request: request.event_id)]
        expected = ["chat.created", "message.created", "note.created", "message.created"]
        assert types == (expected if include else [t for t in expected if t != "note.created"])
    finally:
        receiver.close()


# --- saved replies -------------------------------------------------------------------------------

def test_saved_replies_are_shared_created_replaced_and_deleted(client, ann, bob):
    assert ok(ann.get("/replies")) == {"replies": [], "next_after": None, "has_more": False}
    created = put_reply(client, ann, "hello", "Hello! How can I help?")
    assert created.json["message"] == "Saved reply created."
    assert ok(created)["updated_by"] == {"name": "ann", "display_name": "Ann"}
    ok(put_reply(client, ann, "A-1_b", "Second"))
    replaced = put_reply(client, bob, "hello", "Hi there!")
    assert replaced.json["message"] == "Saved reply replaced."

    replies = ok(bob.get("/replies"))["replies"]
    assert [(reply["shortcut"], reply["text"], reply["updated_by"]["name"])
            for reply in replies] == [("A-1_b", "Second", "ann"), ("hello", "Hi there!", "bob")]
    assert ok(ann.get("/replies"))["replies"] == replies

    deleted = client.delete("/api/agent/replies/hello", headers=ann.headers)
    assert ok(deleted) == {"shortcut": "hello"}
    assert_error(client.delete("/api/agent/replies/hello", headers=ann.headers), 404,
                 "reply_not_found")
    assert [reply["shortcut"] for reply in ok(ann.get("/replies"))["replies"]] == ["A-1_b"]


@pytest.mark.parametrize("shortcut", ["a" * 33, "a.b", "%C3%A9t%C3%A9", "a%20b", "a%00",
                                      "%E2%80%AEx", "K%E2%84%AA"])
def test_a_shortcut_of_other_characters_is_refused(client, ann, shortcut):
    body = assert_error(put_reply(client, ann, shortcut, "text"), 400, "validation_error")
    assert body["error"]["fields"] == {"shortcut": ["Must be 1 to 32 letters, digits, - or _."]}
    assert_error(client.delete(f"/api/agent/replies/{shortcut}", headers=ann.headers), 400,
                 "validation_error")
    assert ok(ann.get("/replies")) == {"replies": [], "next_after": None, "has_more": False}


@pytest.mark.parametrize("body, code", [
    ({"data": {}}, "validation_error"), ({"data": {"text": ""}}, "validation_error"),
    ({"data": {"text": 3}}, "validation_error"), ({"data": {"text": " "}}, "validation_error"),
    ({"data": {"text": "x" * 10_001}}, "validation_error"), ({"text": "x"}, "invalid_json"),
    ([], "invalid_json")])
def test_a_bad_saved_reply_is_refused(client, ann, body, code):
    response = client.put("/api/agent/replies/ok", json=body, headers=ann.headers)
    assert_error(response, 400, code)
    assert ok(ann.get("/replies")) == {"replies": [], "next_after": None, "has_more": False}


def test_saved_replies_are_capped(client, ann, monkeypatch):
    from chat import workspace
    monkeypatch.setattr(workspace, "MAX_SAVED_REPLIES", 2)
    ok(put_reply(client, ann, "one", "1"))
    ok(put_reply(client, ann, "two", "2"))
    assert_error(put_reply(client, ann, "three", "3"), 409, "too_many_replies")
    ok(put_reply(client, ann, "two", "2 again"))  # replacing one is still fine


def test_saved_replies_need_an_agent(client, pat):
    assert_error(client.get("/api/agent/replies"), 401, "unauthorized")
    assert_error(client.put("/api/agent/replies/x", json={"data": {"text": "y"}},
                            headers=pat.headers), 401, "unauthorized")


# --- the customer beside the chat ------------------------------------------------------------

def test_the_customer_panel_has_the_customer_and_their_chats_most_recent_first(app, ann, pat):
    first = pat.create("Old question", name="Basic Plan", plan_id=1, created_at=1679223400.5)
    ok(ann.post(f"/chats/{first}/close"))
    second = pat.create("New question", name="Premium Plan", plan_id=5, created_at=1679223400)

    data = ok(ann.get("/customers/PAT@example.com"))  # found as users are: ASCII case folded
    customer = data["customer"]
    assert {key: customer[key] for key in ("email", "name", "plan_name", "plan_id",
                                           "account_created_at")} == {
        "email": "pat@example.com", "name": "Pat", "plan_name": "Premium Plan", "plan_id": 5,
        "account_created_at": 1679223400}
    assert customer["first_seen"] == data["chats"][1]["created_at"]  # their first chat
    assert [chat["chatId"] for chat in data["chats"]] == [second, first]
    assert data["chats"][1]["status"] == "closed" and data["has_more"] is False

    page = ok(ann.get("/customers/pat@example.com", limit=1))
    assert [chat["chatId"] for chat in page["chats"]] == [second] and page["has_more"]
    rest = ok(ann.get("/customers/pat@example.com", before=page["next_before"]))
    assert [chat["chatId"] for chat in rest["chats"]] == [first]

    with app.app_context():
        accounts.remove_user("pat@example.com")  # their history stays for the agents
    assert ok(ann.get("/customers/pat@example.com"))["customer"]["email"] == "pat@example.com"


def test_a_customer_with_no_chat_yet_has_no_plan(app, ann):
    new_customer(app, email="new@example.com")
    customer = ok(ann.get("/customers/new@example.com"))["customer"]
    assert (customer["plan_name"], customer["plan_id"], customer["account_created_at"],
            customer["first_seen"]) == (None, None, None, None)


@pytest.mark.parametrize("email", ["nobody@example.com", "pat%00@example.com",
                                   "p%E2%84%AAt@example.com",
                                   "x" * 300 + "@example.com"])
def test_an_unknown_customer_is_not_found(ann, pat, email):
    assert_error(ann.get(f"/customers/{email}"), 404, "customer_not_found")


@pytest.mark.parametrize("path", ["/chats/counts?status=closed", "/me?x=1", "/agents?all=1",
                                  "/replies?shortcut=hi"])
def test_a_parameter_a_list_does_not_take_is_refused(ann, path):
    assert_error(ann.client.get(f"/api/agent{path}", headers=ann.headers), 400,
                 "validation_error")


def test_the_agent_and_the_agents(ann, bob, app):
    assert ok(ann.get("/me")) == {"name": "ann", "display_name": "Ann"}
    new_agent(app, "gone")
    with app.app_context():
        accounts.remove_agent("gone")
    assert ok(bob.get("/agents")) == {"agents": [{"name": "ann", "display_name": "Ann"},
                                                 {"name": "bob", "display_name": None}]}


# --- agents' answers bounded in bytes --------------------------------------------------------

EMOJI = "\U0001f600"  # 4 bytes in UTF-8


def follow_pages(get, after_param):
    """Every item of a paged answer, following `next_after`; and the pages' JSON sizes."""
    items, sizes, after = [], [], None
    while True:
        answer = get({after_param: after} if after is not None else {})
        assert answer.status_code == 200, answer.text
        sizes.append(len(answer.content))
        page = answer.json()["data"]
        key = "replies" if "replies" in page else "notes"
        items += page[key]
        if not page["has_more"]:
            return items, sizes
        assert page[key] and page["next_after"] is not None
        after = page["next_after"]


@pytest.mark.slow
def test_saved_replies_and_notes_come_in_pages_bounded_in_bytes_on_a_real_server(
        tmp_path, database_url, app):
    """500 saved replies of 10,000 characters were 20 MB in one answer, 100 notes 4 MB."""
    agent = new_agent(app, "ann")
    chat_id = new_customer(app).create("Hello")
    release_database()
    settings = {"MAX_POLL_PAGE_BYTES": "100000", "MAX_CONTENT_LENGTH": "1048576"}
    with running_server(tmp_path, database_url, env=settings) as server:
        api = f"{server.url}/api/agent"
        for number in range(12):
            text = f"{number} " + EMOJI * 9_000  # 36 KB each
            assert requests.put(f"{api}/replies/r{number:02}", json={"data": {"text": text}},
                                headers=agent.headers, timeout=30).status_code == 200
            assert requests.post(f"{api}/chats/{chat_id}/notes", timeout=30,
                                 json={"data": {"message": text}},
                                 headers=agent.headers).status_code == 200
        replies, reply_pages = follow_pages(lambda params: requests.get(
            f"{api}/replies", params=params, headers=agent.headers, timeout=30), "after")
        notes, note_pages = follow_pages(lambda params: requests.get(
            f"{api}/chats/{chat_id}/notes", params={"limit": 100, **params},
            headers=agent.headers, timeout=30), "after")
    assert [reply["shortcut"] for reply in replies] == [f"r{n:02}" for n in range(12)]
    assert [note["message"].split()[0] for note in notes] == [str(n) for n in range(12)]
    for sizes in (reply_pages, note_pages):
        assert len(sizes) >= 4 and max(sizes) <= 100_000 + 1_000  # the envelope beside
