"""The logs: one format on every launcher, and one access-log line per request that never
carries a token, a uuid, a query string or a body, and cannot be made to forge a line."""
import logging
import re
import signal
import sys

import pytest
import requests

from support.helpers import new_agent, new_customer, release_database, running_server, wait_until

# time, level, logger: message
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
                      r"[\w.]+: ")
# client, method, path, status, milliseconds, body bytes
ACCESS_LINE = re.compile(r"(\S+) (\S+) (\S+) (\d{3}) \d+\.\dms (\d+)B")

WAITRESS_SERVE = [sys.executable, "-m", "waitress", "--host=127.0.0.1", "--port={port}",
                  "--call", "app:create_app"]
FLASK_RUN = [sys.executable, "-m", "flask", "--app", "app", "run", "--port", "{port}"]


HEALTH_CHECK = ("GET", "/healthz", "200")  # running_server's, while it waits for the server


def access_lines(log):
    """The access lines of a server's log, as (client, method, path, status, bytes), but for
    the health checks of `running_server`."""
    lines = [ACCESS_LINE.fullmatch(line.split(" supportzen.access: ", 1)[1]).groups()
             for line in log.splitlines() if " supportzen.access: " in line]
    return [line for line in lines if line[1:4] != HEALTH_CHECK]


def log_after(server, count):
    """The log once it has `count` access lines: a server writes a request's line once it
    has sent the answer, so the client may read the answer first."""
    wait_until(lambda: len(access_lines(server.log())) >= count, what=f"{count} access lines")
    return server.log()


def make_requests(server, customer):
    """A spread of requests whose lines must hide what they carry; [(method, path, status)]."""
    token = customer.token
    answers = [
        requests.head(f"{server.url}/healthz?token={token}&uuid={customer.uuid}", timeout=30),
        requests.post(f"{server.url}/api/client/live/create", timeout=30,
                      headers={"Authorization": f"Bearer {token}"},
                      json={"data": {"email": customer.email, "created_at": 1,
                                     "message": "body text that stays out of the log"}}),
        requests.post(f"{server.url}/api/client/live/create", timeout=30,
                      headers={"Authorization": "Bearer " + "0" * 64},
                      json={"data": {"email": customer.email, "created_at": 1, "message": "x"}}),
        requests.get(f"{server.url}/nowhere%0A1999-01-01 00:00:00,000 ERROR forged: line",
                     timeout=30),
    ]
    assert [answer.status_code for answer in answers] == [200, 200, 401, 404]
    return [("HEAD", "/healthz", "200"), ("POST", "/api/client/live/create", "200"),
            ("POST", "/api/client/live/create", "401"),
            ("GET", r"/nowhere\n1999-01-01\x2000:00:00,000\x20ERROR\x20forged:\x20line", "404")]


def assert_safe(log, customer):
    """No token, uuid or body, and no line forged through the path's %0A."""
    assert customer.token not in log and customer.uuid not in log
    assert "body text" not in log
    assert not any(line.startswith("1999-01-01") for line in log.splitlines())


@pytest.mark.slow
@pytest.mark.parametrize("command", [None, WAITRESS_SERVE], ids=["python-app-py", "waitress-serve"])
def test_each_request_logs_one_line_in_the_one_format(tmp_path, database_url, app, command):
    customer = new_customer(app)
    release_database()
    with running_server(tmp_path, database_url, command) as server:
        expected = make_requests(server, customer)
        log = log_after(server, len(expected))
    lines = access_lines(log)
    # Each line is written once its answer is sent: two threads may write theirs in turn.
    assert sorted(line[1:4] for line in lines) == sorted(expected)
    assert {line[0] for line in lines} == {"127.0.0.1"}
    body_bytes = {line[1]: int(line[4]) for line in lines if line[3] == "200"}
    assert body_bytes["HEAD"] == 0 and body_bytes["POST"] > 0
    assert_safe(log, customer)
    # Every line of the log, the service's, waitress's and the access log's, in one format.
    for line in log.splitlines():
        assert LOG_LINE.match(line), line
    assert f"INFO waitress: Serving on {server.url}" in log


@pytest.mark.slow
def test_flask_run_logs_the_same_lines_and_not_its_own(tmp_path, database_url, app):
    customer = new_customer(app)
    release_database()
    with running_server(tmp_path, database_url, FLASK_RUN) as server:
        expected = make_requests(server, customer)
        log = log_after(server, len(expected))
    assert sorted(line[1:4] for line in access_lines(log)) == sorted(expected)
    assert_safe(log, customer)
    assert "HTTP/1.1\" 200" not in log  # werkzeug's own request line
    assert re.search(LOG_LINE.pattern + ".*development server", log)  # werkzeug's, our format


@pytest.mark.slow
def test_access_log_false_turns_the_lines_off(tmp_path, database_url):
    with running_server(tmp_path, database_url, env={"ACCESS_LOG": "false"}) as server:
        assert requests.get(f"{server.url}/healthz", timeout=30).status_code == 200
        # Stopped with SIGTERM, the server exits once it has answered (and logged) everything.
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
        log = server.log()
    assert "supportzen.access" not in log
    assert f"Serving on {server.url}" in log


@pytest.mark.slow
def test_no_customer_email_and_no_invisible_direction_mark_in_the_lines(
        tmp_path, database_url, app):
    """The customer panel's path names a customer by email: the line shows the route, not
    the address. A path's RLM (U+200F) or ZERO WIDTH SPACE would reorder or hide what an
    operator reads: escaped like a control character."""
    customer = new_customer(app, email="pat.private@example.com")
    agent = new_agent(app, "alice")
    release_database()
    with running_server(tmp_path, database_url) as server:
        for email in ("pat.private@example.com", "pat.private%40example.com"):
            answer = requests.get(f"{server.url}/api/agent/customers/{email}", timeout=30,
                                  headers=agent.headers)
            assert answer.status_code == 200, answer.text
        hidden = requests.get(f"{server.url}/x%E2%80%8Fgnp.exe%E2%80%8B%D8%9C%CD%8F",
                              timeout=30)
        assert hidden.status_code == 404
        # Mistyped routes with an address in them (a doubled slash, another case).
        for path in ("/api/agent//customers/pat.private@example.com",
                     "/API/agent/customers/pat.private@example.com",
                     "/api/client/live/pat.private@example.com"):
            assert requests.get(server.url + path, timeout=30).status_code in (404, 405)
        log = log_after(server, 6)
    assert [line[1:3] for line in access_lines(log)] == [
        ("GET", "/api/agent/customers/<email>"), ("GET", "/api/agent/customers/<email>"),
        ("GET", r"/x\u200fgnp.exe\u200b\u061c\u034f"), ("GET", "/api/agent//customers/<email>"),
        ("GET", "/API/agent/customers/<email>"), ("GET", "/api/client/live/<email>")]
    assert "pat.private" not in log
    assert customer.email not in log


def test_the_app_logs_each_request_on_any_launcher(customer, client, caplog):
    caplog.set_level(logging.INFO, logger="supportzen.access")
    client.post("/api/client/live/create", headers=customer.headers, buffered=True, json={
        "data": {"email": customer.email, "created_at": 1, "message": "never logged"}})
    client.get("/healthz?secret=1", buffered=True)
    client.get("/a%0Ab%1B[31m%E2%80%A8", buffered=True)  # newline, escape, line separator
    client.get("/caf%C3%A9", buffered=True)  # UTF-8 shown as such
    client.post("/api/client/live/chat", json={"data": {}}, buffered=True)
    lines = [record.getMessage() for record in caplog.records
             if record.name == "supportzen.access"]
    assert [ACCESS_LINE.fullmatch(line).groups()[1:4] for line in lines] == [
        ("POST", "/api/client/live/create", "200"), ("GET", "/healthz", "200"),
        ("GET", r"/a\nb\x1b[31m\u2028", "404"), ("GET", "/café", "404"),
        ("POST", "/api/client/live/chat", "401")]
    assert customer.token not in caplog.text and customer.uuid not in caplog.text
    assert "never logged" not in caplog.text and "secret" not in caplog.text


def test_access_log_can_be_turned_off(make_app, caplog):
    caplog.set_level(logging.INFO, logger="supportzen.access")
    client = make_app(ACCESS_LOG=False).test_client()
    assert client.get("/healthz", buffered=True).status_code == 200
    assert not [record for record in caplog.records if record.name == "supportzen.access"]
