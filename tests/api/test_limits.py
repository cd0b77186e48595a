"""Rate limits (per IP for failed auth, per user for sends, per agent) and other limits."""
import inspect
import uuid

import pytest
import requests

import models
from api import ratelimits
from support.helpers import assert_error, new_agent, new_customer, redis_url, running_server


@pytest.fixture
def limited(make_app):
    """An app with small limits, and a customer and agents on it."""
    return make_app(RATELIMIT_AUTH_FAILURES="3 per minute", RATELIMIT_CUSTOMER_SENDS="3 per minute",
                    RATELIMIT_AGENT_CALLS="2 per minute")


def bad_login(client):
    return client.post("/api/client/live/create", json={"data": {"email": "x@example.com"}},
                       headers={"Authorization": "Bearer " + "0" * 64})


def test_failed_authentications_are_limited_per_ip(limited):
    client = limited.test_client()
    for _ in range(3):
        assert_error(bad_login(client), 401, "unauthorized")
    response = bad_login(client)
    assert_error(response, 429, "rate_limited")
    assert 1 <= int(response.headers["Retry-After"]) <= 61  # the window, rounded up
    # Only failures are held back: good credentials from the same address still work (a
    # customer behind the same NAT as a broken client), while its failures stay refused.
    customer = new_customer(limited, "late@example.com")
    assert customer.post("/api/client/live/list", {}).status_code == 200
    assert_error(bad_login(client), 429, "rate_limited")


def test_successful_requests_do_not_count_as_failures(limited):
    customer = new_customer(limited, "good@example.com")
    chat_id = customer.create()
    for _ in range(6):
        assert customer.poll(chat_id).status_code == 200


def test_customer_sends_are_limited_per_user(limited):
    alice = new_customer(limited, "alice@example.com")
    bob = new_customer(limited, "bob@example.com")
    chat_id = alice.create()
    assert alice.send(chat_id).status_code == 200
    assert alice.send(chat_id).status_code == 200
    response = alice.send(chat_id)
    assert_error(response, 429, "rate_limited")
    assert int(response.headers["Retry-After"]) >= 1
    assert alice.poll(chat_id).status_code == 200  # reading is not sending
    assert bob.create()  # another user's budget is untouched
    with limited.app_context():
        assert models.Message.select().count() == 4


def test_agent_calls_are_limited_per_agent(limited):
    customer = new_customer(limited, "c@example.com")
    chat_id = customer.create()
    first, second = new_agent(limited, "first"), new_agent(limited, "second")
    assert first.get("/chats").status_code == 200
    assert first.reply(chat_id, "hi").status_code == 200
    assert_error(first.get(f"/chats/{chat_id}"), 429, "rate_limited")
    assert second.get("/chats").status_code == 200


def test_rate_limits_can_be_turned_off(make_app, monkeypatch):
    monkeypatch.setenv("RATELIMIT_ENABLED", "false")
    client = make_app(RATELIMIT_AUTH_FAILURES="1 per minute").test_client()
    for _ in range(5):
        assert_error(bad_login(client), 401, "unauthorized")


def test_open_chats_per_user_are_capped(make_app):
    app = make_app(MAX_OPEN_CHATS=2)
    customer = new_customer(app, "busy@example.com")
    first = customer.create()
    customer.create()
    response = customer.post("/api/client/live/create", {"created_at": 1, "message": "third"})
    assert_error(response, 409, "too_many_open_chats")
    customer.close(first)
    response = customer.post("/api/client/live/create", {"created_at": 1, "message": "third"})
    assert response.status_code == 200


def test_oversized_headers_get_a_json_431(client):
    response = client.get("/healthz", headers={"X-Padding": "p" * 9000})
    assert_error(response, 431, "headers_too_large")
    assert client.get("/healthz", headers={"X-Padding": "p" * 4000}).status_code == 200


def test_redis_storage_shares_limits_across_instances(make_app):
    config = {"RATELIMIT_STORAGE_URI": redis_url(),
              "RATELIMIT_KEY_PREFIX": f"test-{uuid.uuid4().hex}",
              "RATELIMIT_AUTH_FAILURES": "3 per minute"}
    one, two = make_app(**config).test_client(), make_app(**config).test_client()
    assert_error(bad_login(one), 401, "unauthorized")
    assert_error(bad_login(two), 401, "unauthorized")
    assert_error(bad_login(one), 401, "unauthorized")
    assert_error(bad_login(two), 429, "rate_limited")  # the fourth failure, across instances


def failures_until_limited(server, forwarded_for):
    """How many failed logins pass before a 429, each with its own X-Forwarded-For."""
    for attempt, address in enumerate(forwarded_for):
        response = requests.post(f"{server.url}/api/client/live/create", timeout=30,
                                 json={"data": {"email": "x@example.com"}},
                                 headers={"Authorization": "Bearer " + "0" * 64,
                                          "X-Forwarded-For": address})
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "rate_limited"
            return attempt
        assert response.status_code == 401
    return len(forwarded_for)


LIMITS_ON = {"RATELIMIT_ENABLED": "true", "RATELIMIT_AUTH_FAILURES": "3 per minute"}


@pytest.mark.slow
def test_behind_a_trusted_proxy_each_client_has_its_own_bucket(tmp_path, database_url):
    env = {**LIMITS_ON, "TRUSTED_PROXY": "127.0.0.1"}
    with running_server(tmp_path, database_url, env=env) as server:
        assert failures_until_limited(server, ["203.0.113.7"] * 5) == 3
        assert failures_until_limited(server, ["198.51.100.9"] * 5) == 3


@pytest.mark.slow
def test_a_spoofed_forwarded_for_does_not_change_the_bucket(tmp_path, database_url):
    for env in ({**LIMITS_ON}, {**LIMITS_ON, "TRUSTED_PROXY": "10.9.9.9"}):
        with running_server(tmp_path, database_url, env=env) as server:
            spoofed = [f"203.0.113.{n}" for n in range(1, 6)]
            assert failures_until_limited(server, spoofed) == 3


def test_rate_limiting_is_the_release_ratelimits_py_was_checked_on():
    """api/ratelimits.py sets flask-limiter's private state and shadows the store's `check`, which
    flask-limiter calls on the request path: another release may have changed them."""
    assert ratelimits.installed_rate_limiting() == ratelimits.VERIFIED_RATE_LIMITING, (
        "re-check api/ratelimits.py (StoreWatch, setup_limits) against the installed releases, "
        "then update VERIFIED_RATE_LIMITING and the pins in requirements.txt")
    limiter = ratelimits.limiter
    assert hasattr(limiter, "_storage_dead") and hasattr(limiter, "_storage_options")
    filter_limits = inspect.getsource(type(limiter)._Limiter__filter_limits)
    assert "self._storage.check()" in filter_limits
