"""Field validation: every bad field is a 400 validation_error naming the field."""
import pytest
import requests

import models
from support.helpers import (
    assert_error,
    live_post,
    new_agent,
    new_customer,
    release_database,
    running_server,
)

GOOD_CREATE = {"name": "Premium Plan", "plan_id": 5, "created_at": 1679223400,
               "message": "hello"}

BAD_CREATE = [
    ("message", {"message": None}),
    ("message", {"message": ""}),
    ("message", {"message": "   "}),
    ("message", {"message": "x" * 10_001}),
    ("message", {"message": "nul \x00 inside"}),
    ("message", {"message": "lone \ud800 surrogate"}),
    ("message", {"message": 42}),
    ("message", {"message": ["hello"]}),
    ("created_at", {"created_at": None}),
    ("created_at", {"created_at": -1}),
    ("created_at", {"created_at": "1679223400"}),
    ("created_at", {"created_at": True}),
    ("created_at", {"created_at": 10**13}),
    ("plan_id", {"plan_id": -1}),
    ("plan_id", {"plan_id": 1.5}),
    ("plan_id", {"plan_id": "5"}),
    ("plan_id", {"plan_id": True}),
    ("plan_id", {"plan_id": 2**64}),
    ("name", {"name": "n" * 201}),
    ("name", {"name": 7}),
    ("image_url", {"image_url": "ftp://example.com/a.png"}),
    ("image_url", {"image_url": "javascript:alert(1)"}),
    ("image_url", {"image_url": "http://localhost/a.png"}),
    ("image_url", {"image_url": "https://example.com/" + "a" * 2048}),
    ("image_url", {"image_url": "not a url"}),
    ("surprise", {"surprise": 1}),
]


@pytest.mark.parametrize("field,change", BAD_CREATE)
def test_create_rejects(customer, app, field, change):
    response = customer.post("/api/client/live/create", {**GOOD_CREATE, **change})
    body = assert_error(response, 400, "validation_error")
    assert list(body["error"]["fields"]) == [field]
    with app.app_context():
        assert models.Chat.select().count() == 0


@pytest.mark.parametrize("field", ["message", "created_at"])
def test_create_requires(customer, field):
    data = {key: value for key, value in GOOD_CREATE.items() if key != field}
    body = assert_error(customer.post("/api/client/live/create", data), 400,
                        "validation_error")
    assert body["error"]["fields"] == {field: ["Missing data for required field."]}


def test_create_accepts_limits(customer):
    response = customer.post("/api/client/live/create", {
        "name": "n" * 200, "plan_id": 0, "created_at": 0, "message": "m" * 10_000,
        "image_url": "https://example.com/" + "a" * (2048 - 20)})
    assert response.status_code == 200, response.json


def test_create_nan_is_rejected(customer, client):
    raw = ('{"data": {"email": "user@example.com", "created_at": NaN, "message": "hi"}}')
    response = client.post("/api/client/live/create", data=raw,
                           content_type="application/json", headers=customer.headers)
    body = assert_error(response, 400, "validation_error")
    assert list(body["error"]["fields"]) == ["created_at"]


BAD_SEND = [
    ("chat_id", {"chat_id": None}),
    ("chat_id", {"chat_id": 12}),
    ("chat_id", {"chat_id": ""}),
    ("chat_id", {"chat_id": "c" * 65}),
    ("message", {"message": ""}),
    ("message", {"message": "x" * 10_001}),
    ("message", {"message": "a\x00b"}),
    ("image_url", {"image_url": "file:///etc/passwd"}),
    ("extra", {"extra": True}),
]


@pytest.mark.parametrize("field,change", BAD_SEND)
def test_send_rejects(customer, app, field, change):
    chat_id = customer.create()
    response = customer.post("/api/client/live/chat",
                             {"chat_id": chat_id, "message": "hello", **change})
    body = assert_error(response, 400, "validation_error")
    assert list(body["error"]["fields"]) == [field]
    with app.app_context():
        assert models.Message.select().count() == 1


def test_email_must_be_a_valid_address(make_customer):
    odd = make_customer(email="not-an-address")
    response = odd.post("/api/client/live/create", GOOD_CREATE)
    body = assert_error(response, 400, "validation_error")
    assert list(body["error"]["fields"]) == ["email"]


# Query strings are text, converted to numbers for agents: only ASCII digits, as a client
# means them (int() and float() also read fullwidth, Arabic-Indic and underscored digits).
BAD_QUERY_NUMBERS = [
    ("limit", "\uff11"), ("limit", "\u0665"), ("limit", "1_0"), ("limit", " 5"),
    ("limit", "5.0"), ("after", "\uff10"), ("after", "\u0661"),
    ("wait", "\uff11"), ("wait", "\u0661.\u0665"), ("wait", "1_0"), ("wait", "inf"),
    ("wait", "nan"),
]


@pytest.mark.parametrize("field,value", BAD_QUERY_NUMBERS)
def test_agent_query_numbers_are_ascii(customer, agent, field, value):
    chat_id = customer.create()
    response = agent.get(f"/chats/{chat_id}/messages", **{field: value})
    body = assert_error(response, 400, "validation_error")
    assert list(body["error"]["fields"]) == [field]
    if field == "limit":
        response = agent.get("/chats", limit=value)
        body = assert_error(response, 400, "validation_error")
        assert list(body["error"]["fields"]) == ["limit"]


@pytest.mark.parametrize("params", [{"limit": "5"}, {"after": "0"}, {"after": "+0"},
                                    {"wait": "0"}, {"wait": "0.0"}, {"wait": ".0"},
                                    {"wait": "0e0"}])
def test_agent_query_numbers_in_ascii_are_read(customer, agent, params):
    chat_id = customer.create()
    response = agent.get(f"/chats/{chat_id}/messages", **params)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert [m["seq"] for m in response.json["data"]["messages"]] == [1]


INVISIBLE_MESSAGES = ["\u200b", "\u200b\u200c\u200d", "\u200f \u200e", "\ufeff", "\u2060",
                      "\u3164", "\u2800 \u3000", "\u00ad",
                      # the other default-ignorable code points: the combining grapheme
                      # joiner, Khmer's inherent vowels, variation selectors, reserved ones
                      "\u034f", "\u17b4\u17b5", "\ufe0f", "\U000e0100", "\u180b", "\ufff0",
                      "\U000e0080"]


@pytest.mark.slow
def test_a_message_of_invisible_characters_is_blank_on_a_real_server(tmp_path, database_url,
                                                                     app):
    customer = new_customer(app)
    chat_id = customer.create("hello")
    agent = new_agent(app, "alice")
    release_database()
    with running_server(tmp_path, database_url) as server:
        for text in INVISIBLE_MESSAGES:
            for answer in (
                    live_post(requests, server.url, "chat", customer.email, customer.token,
                              {"chat_id": chat_id, "message": text}),
                    requests.post(f"{server.url}/api/agent/chats/{chat_id}/messages",
                                  json={"data": {"message": text}}, headers=agent.headers,
                                  timeout=30)):
                assert answer.status_code == 400, (text, answer.text)
                assert answer.json()["error"]["fields"] == {"message": ["Must not be blank."]}
        # Text that shows stays valid, joiners and marks included.
        for text in ("\u200bhi", "\U0001f469\u200d\U0001f4bb", "\u05e9\u05dc\u05d5\u05dd\u200f"):
            answer = live_post(requests, server.url, "chat", customer.email, customer.token,
                               {"chat_id": chat_id, "message": text})
            assert answer.status_code == 200, (text, answer.text)
