"""Chat ids taken from a URL path are checked before they reach the database: whatever a
client puts there (a NUL, an id too long to be one, bytes that are not UTF-8), the answer is
404 `chat_not_found`, never a 500, on SQLite and PostgreSQL alike."""
import pytest
import requests

from support.helpers import assert_error, new_agent, new_customer, release_database, running_server

# As they appear in the URL, percent-encoded.
IMPOSSIBLE_IDS = [
    "%00",  # NUL: PostgreSQL refuses it in text
    "chat-%00abc",
    "x" * 65,  # longer than any chat id
    "chat-" + "a" * 300,
    "%ff",  # not UTF-8
    "chat-%c0%80",  # an over-long encoding of NUL
    "%ed%a0%80",  # UTF-8 for a lone surrogate
    "%fe%ff%00%00",
    "%e2%80%ae",  # RIGHT-TO-LEFT OVERRIDE: valid text, but no chat has it
]

# Every route that takes a chat id from its path: (method, path template, JSON data or None).
ROUTES = [
    ("GET", "/api/agent/chats/{}", None),
    ("GET", "/api/agent/chats/{}/messages", None),
    ("POST", "/api/agent/chats/{}/messages", {"message": "hello"}),
    ("POST", "/api/agent/chats/{}/read", {"seq": 0}),
    ("POST", "/api/agent/chats/{}/close", None),
    ("POST", "/api/agent/chats/{}/reopen", None),
]


@pytest.fixture
def agent(app):
    customer = new_customer(app)
    customer.create()  # a chat exists: the ids below still match none
    return new_agent(app, "alice")


@pytest.mark.parametrize("chat_id", IMPOSSIBLE_IDS)
@pytest.mark.parametrize("method,path,data", ROUTES)
def test_every_url_id_route_answers_404_for_an_impossible_id(agent, method, path, data,
                                                              chat_id):
    body = {"json": {"data": data}} if data is not None else {}
    response = agent.client.open(path.format(chat_id), method=method, headers=agent.headers,
                                 **body)
    assert_error(response, 404, "chat_not_found")


def test_the_same_ids_in_a_customer_body_are_refused_before_the_database(app):
    customer = new_customer(app)
    for chat_id in ("\x00", "chat-\x00abc", "x" * 65, "\ud800"):
        response = customer.poll(chat_id)
        body = assert_error(response, 400, "validation_error")
        assert list(body["error"]["fields"]) == ["chat_id"]


@pytest.mark.slow
def test_a_real_server_answers_404_for_impossible_ids(tmp_path, database_url, app):
    """Through waitress, as a client's raw bytes arrive."""
    new_customer(app).create()
    agent = new_agent(app, "alice")
    release_database()
    with running_server(tmp_path, database_url) as server, requests.Session() as session:
        for chat_id in IMPOSSIBLE_IDS:
            for method, path, data in ROUTES:
                response = session.request(
                    method, server.url + path.format(chat_id), timeout=30,
                    headers=agent.headers, json={"data": data} if data is not None else None)
                assert response.status_code == 404, (method, path, chat_id, response.text)
                assert response.json()["error"]["code"] == "chat_not_found"
        assert "Traceback" not in server.log()


DOUBLED_SLASHES = [("POST", "/api/client/live//chat"), ("POST", "/api/client/live/create//"),
                   ("GET", "/api/agent//chats"), ("GET", "/static//inbox.js"),
                   ("GET", "/api/agent/chats//messages")]


@pytest.mark.slow
def test_a_doubled_slash_is_a_json_404_never_a_redirect(tmp_path, database_url, app):
    """werkzeug's default answers a 308 in HTML to the merged path, its URL built from the
    Host header with http://."""
    agent = new_agent(app, "alice")
    release_database()
    with running_server(tmp_path, database_url) as server, requests.Session() as session:
        for method, path in DOUBLED_SLASHES:
            response = session.request(method, server.url + path, timeout=30,
                                       allow_redirects=False, headers=agent.headers,
                                       json={"data": {}} if method == "POST" else None)
            assert response.status_code == 404, (path, response.status_code, response.text)
            assert "Location" not in response.headers
            assert response.headers["Content-Type"] == "application/json"
            assert response.headers["Cache-Control"] == "no-store"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.json()["error"]["code"] == "not_found"
