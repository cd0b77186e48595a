"""Who a request is: emails matched exactly but for ASCII case and ASCII whitespace, so that a
look-alike never becomes someone else's account; and a waiting long-poll that outlives its
caller's access answers 401."""
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from chat import accounts
from support.helpers import (
    Customer,
    assert_error,
    live_post,
    new_agent,
    new_customer,
    release_database,
    running_server,
    sign,
    wait_until,
)

ADMIN_TOKEN = "admin-token-for-the-identity-tests-0123456789"
KATE = "kate@example.com"
KATE_UUID = "123e4567-e89b-12d3-a456-426614174000"
OTHER_UUID = "00000000-0000-4000-8000-000000000002"
WAIT = 20  # seconds a poll may wait here; a woken poll answers well before that

# Addresses that Unicode case folding, compatibility mapping or `str.strip` would make KATE.
LOOK_ALIKES = [
    "\u212aate@example.com",  # KELVIN SIGN: "\u212a".lower() == "k"
    "kate@example.com\u3000",  # IDEOGRAPHIC SPACE: stripped by str.strip()
    "\u3000kate@example.com",
    "kate@example.com\u00a0",  # NO-BREAK SPACE
    "kate@example.com\u2028",  # LINE SEPARATOR
    "\uff4bate@example.com",  # FULLWIDTH LATIN SMALL LETTER K: NFKC makes it "k"
    "kate@example.com\u200b",  # ZERO WIDTH SPACE: invisible
    "KATE@EXAMPLE.COM\u3000",
]


@pytest.fixture
def admin_app(make_app):
    return make_app(ADMIN_TOKEN=ADMIN_TOKEN)


@pytest.fixture
def kate(admin_app):
    """Kate, with a chat of her own."""
    kate = new_customer(admin_app, KATE, KATE_UUID, "Kate")
    kate.chat_id = kate.create("my own history")
    return kate


def admin_call(app, method, data):
    return app.test_client().open("/api/admin/users", method=method, json={"data": data},
                                  headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})


def assert_kate_intact(app, kate):
    """Kate signs with her own uuid, sees her own chat, and is the only user of her address."""
    with app.app_context():
        users = {user.email: user.uuid for user in accounts.active_users()}
    assert users[KATE] == KATE_UUID
    assert kate.poll(kate.chat_id).json["data"]["messages"][0]["message"] == "my own history"
    usurper = Customer(KATE, OTHER_UUID, app.test_client())
    assert_error(usurper.poll(kate.chat_id), 401, "unauthorized")


# --- normalization: ASCII only ----------------------------------------------------------

def test_normalization_touches_ascii_only():
    assert accounts.normalize_email(" \t Kate@Example.COM\r\n") == KATE
    assert accounts.normalize_email("\u212aate@example.com") == "\u212aate@example.com"
    assert accounts.normalize_email("kate@example.com\u3000") == "kate@example.com\u3000"
    assert accounts.normalize_email("JOS\u00c9@Example.com") == "jos\u00c9@example.com"


# --- the admin API ----------------------------------------------------------------------

@pytest.mark.parametrize("look_alike", LOOK_ALIKES)
def test_admin_sync_of_a_look_alike_is_refused(admin_app, kate, look_alike):
    body = assert_error(admin_call(admin_app, "PUT", {"email": look_alike, "uuid": OTHER_UUID}),
                        400, "validation_error")
    assert list(body["error"]["fields"]) == ["email"]
    assert_error(admin_call(admin_app, "DELETE", {"email": look_alike}), 400, "validation_error")
    assert_kate_intact(admin_app, kate)


def test_admin_sync_keeps_non_ascii_letters_apart(admin_app, kate):
    """Only ASCII letters are lower-cased: "JOSÉ" and "josé" are two users, as the backend that
    syncs them may well mean (a real address may have non-ASCII letters)."""
    lower = admin_call(admin_app, "PUT", {"email": "Jos\u00e9@Example.com", "uuid": KATE_UUID})
    assert lower.json["data"] == {"email": "jos\u00e9@example.com", "name": None,
                                  "created": True}
    upper = admin_call(admin_app, "PUT", {"email": "JOS\u00c9@example.com", "uuid": OTHER_UUID})
    assert upper.json["data"] == {"email": "jos\u00c9@example.com", "name": None,
                                  "created": True}
    with admin_app.app_context():
        users = {user.email: user.uuid for user in accounts.active_users()}
    assert users == {KATE: KATE_UUID, "jos\u00e9@example.com": KATE_UUID,
                     "jos\u00c9@example.com": OTHER_UUID}
    assert_kate_intact(admin_app, kate)


def test_admin_sync_still_matches_ascii_case_and_whitespace(admin_app, kate):
    response = admin_call(admin_app, "PUT", {"email": " KATE@Example.com\t", "uuid": KATE_UUID,
                                             "name": "Kate B."})
    assert response.json["data"] == {"email": KATE, "name": "Kate B.", "created": False}
    assert_kate_intact(admin_app, kate)


# --- the CLI ----------------------------------------------------------------------------

@pytest.mark.parametrize("look_alike", LOOK_ALIKES)
def test_cli_add_of_a_look_alike_is_refused(admin_app, kate, look_alike):
    runner = admin_app.test_cli_runner()
    result = runner.invoke(args=["users", "add", look_alike, OTHER_UUID])
    assert result.exit_code != 0 and "email:" in result.output
    removed = runner.invoke(args=["users", "remove", look_alike])
    assert removed.exit_code == 1 and "no active user" in removed.output
    assert_kate_intact(admin_app, kate)


def test_cli_import_of_look_alikes_rejects_each_row(admin_app, kate, tmp_path):
    runner = admin_app.test_cli_runner()
    csv_path = tmp_path / "users.csv"
    csv_path.write_text("email,uuid\n" + "".join(f"{email},{OTHER_UUID}\n"
                                                  for email in LOOK_ALIKES), encoding="utf-8")
    result = runner.invoke(args=["users", "import", str(csv_path)])
    assert result.exit_code == 1
    assert f"added 0, updated 0, rejected {len(LOOK_ALIKES)}" in result.output
    jsonl_path = tmp_path / "users.jsonl"
    jsonl_path.write_text("".join(json.dumps({"email": email, "uuid": OTHER_UUID}) + "\n"
                                  for email in LOOK_ALIKES), encoding="utf-8")
    result = runner.invoke(args=["users", "import", str(jsonl_path)])
    assert f"added 0, updated 0, rejected {len(LOOK_ALIKES)}" in result.output
    assert_kate_intact(admin_app, kate)


# --- the customer API -------------------------------------------------------------------

@pytest.mark.parametrize("look_alike", LOOK_ALIKES)
def test_a_look_alike_signed_with_kates_uuid_is_not_kate(admin_app, kate, look_alike):
    client = admin_app.test_client()
    token = sign(look_alike, KATE_UUID)
    for path, data in [("list", {}), ("messages", {"chat_id": kate.chat_id}),
                       ("create", {"created_at": 1, "message": "hi"})]:
        response = client.post(f"/api/client/live/{path}",
                               json={"data": {"email": look_alike, **data}},
                               headers={"Authorization": f"Bearer {token}"})
        assert_error(response, 401, "unauthorized")
    assert_kate_intact(admin_app, kate)


def test_a_stored_look_alike_signed_with_its_own_uuid_never_reaches_kate(admin_app, kate):
    """Were such an address in the table (from before the validation was tightened), it would
    be matched exactly, as a user of its own, and its requests refused as invalid."""
    other = new_customer(admin_app, "\u212aate@example.com", OTHER_UUID)
    for response in (other.poll(kate.chat_id), other.list(),
                     other.post("/api/client/live/create", {"created_at": 1, "message": "x"})):
        body = assert_error(response, 400, "validation_error")
        assert list(body["error"]["fields"]) == ["email"]
    assert [chat["chatId"] for chat in kate.list().json["data"]["chats"]] == [kate.chat_id]
    assert_kate_intact(admin_app, kate)


# --- a waiting long-poll and revoked access ------------------------------------------------

def test_waiting_customer_poll_answers_401_once_the_customer_is_removed(
        app, runner, waiting):
    customer = new_customer(app)
    agent = new_agent(app, "alice")
    chat_id = customer.create()
    with ThreadPoolExecutor(1) as pool:
        poll = pool.submit(customer.poll, chat_id, after=1, wait=WAIT)
        wait_until(lambda: waiting, what="the poll to wait")
        assert runner.invoke(args=["users", "remove", customer.email]).exit_code == 0
        assert agent.reply(chat_id, "written after the removal").status_code == 200
        response = poll.result(timeout=60)
    body = assert_error(response, 401, "unauthorized")
    assert "written after the removal" not in json.dumps(body)


def test_waiting_customer_poll_answers_401_once_the_uuid_changes(app, waiting):
    customer = new_customer(app)
    agent = new_agent(app, "alice")
    chat_id = customer.create()
    with ThreadPoolExecutor(1) as pool:
        poll = pool.submit(customer.poll, chat_id, after=1, wait=WAIT)
        wait_until(lambda: waiting, what="the poll to wait")
        with app.app_context():
            accounts.save_user(customer.email, OTHER_UUID)  # the old token is revoked
        agent.reply(chat_id, "for the new uuid only")
        assert_error(poll.result(timeout=60), 401, "unauthorized")


def test_waiting_agent_poll_answers_401_once_the_agent_is_removed(app, runner, waiting):
    customer = new_customer(app)
    agent = new_agent(app, "erin", client=app.test_client())
    chat_id = customer.create()
    with ThreadPoolExecutor(1) as pool:
        poll = pool.submit(agent.get, f"/chats/{chat_id}/messages", after=1, wait=WAIT)
        wait_until(lambda: waiting, what="the poll to wait")
        assert runner.invoke(args=["agents", "remove", "erin"]).exit_code == 0
        assert customer.send(chat_id, "written after the revocation").status_code == 200
        response = poll.result(timeout=60)
    body = assert_error(response, 401, "unauthorized")
    assert "written after the revocation" not in json.dumps(body)


def test_waiting_polls_of_allowed_callers_are_still_answered(app, waiting):
    customer = new_customer(app)
    agent = new_agent(app, "alice", client=app.test_client())
    chat_id = customer.create()
    with ThreadPoolExecutor(2) as pool:
        customer_poll = pool.submit(customer.poll, chat_id, after=1, wait=WAIT)
        agent_poll = pool.submit(agent.get, f"/chats/{chat_id}/messages", after=1, wait=WAIT)
        wait_until(lambda: len(set(waiting)) == 2, what="both polls to wait")
        with app.app_context():
            accounts.save_user(customer.email, customer.uuid, "A new name")  # same uuid
        customer.send(chat_id, "still here")
        for poll in (customer_poll, agent_poll):
            page = poll.result(timeout=60).json["data"]
            assert [m["message"] for m in page["messages"]] == ["still here"]


# --- one length rule for provisioning and signing in ------------------------------------

LONG_ADDRESSES = [
    "\u00e9" * 170 + "@example.com",  # 182 characters, 352 bytes in UTF-8
    "\u4f60" * 120 + "@example.com",  # 132 characters, 372 bytes
    "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 61,  # 254: the most allowed
]


@pytest.mark.slow
def test_every_address_the_admin_api_accepts_can_sign_in_on_a_real_server(
        tmp_path, database_url, app):
    release_database()
    with running_server(tmp_path, database_url, env={"ADMIN_TOKEN": ADMIN_TOKEN}) as server:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        for address in LONG_ADDRESSES:
            provisioned = requests.put(f"{server.url}/api/admin/users", headers=admin,
                                       json={"data": {"email": address, "uuid": KATE_UUID}},
                                       timeout=30)
            assert provisioned.status_code == 200, provisioned.text
            token = sign(address, KATE_UUID)
            created = live_post(requests, server.url, "create", address, token,
                                {"created_at": 1, "message": "hello"})
            assert created.status_code == 200, (address, created.text)
            listed = live_post(requests, server.url, "list", address, token, {})
            assert len(listed.json()["data"]["chats"]) == 1
        too_long = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 62  # 255
        refused = requests.put(f"{server.url}/api/admin/users", headers=admin, timeout=30,
                               json={"data": {"email": too_long, "uuid": KATE_UUID}})
        assert refused.status_code == 400
        assert list(refused.json()["error"]["fields"]) == ["email"]
