"""Webhooks against a real receiver on 127.0.0.1: every event arrives, signed as the README says,
in order per chat, through a receiver that is down, failing or slow, and across a crash."""
import datetime
import email.utils
import hashlib
import hmac
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

import models
from events import http as webhook_http
from events import webhooks
from support.helpers import (
    ROOT,
    flask_command,
    new_agent,
    new_customer,
    release_database,
    running_server,
    seed_customers,
    wait_until,
)
from support.receiver import Receiver, ok
from support.wire import open_chat

SECRET = "test-webhook-secret-0123456789abcdef"
FAST_RETRIES = {"WEBHOOK_FIRST_RETRY_SECONDS": 0.05}


def readme_snippet(language):
    """The documented signature check (docs/events-and-webhooks.md) in `language` ("python" or
    "javascript")."""
    with open(os.path.join(ROOT, "docs", "events-and-webhooks.md"), encoding="utf-8") as readme:
        text = readme.read()
    section = text[text.index("### Verifying a signature"):
                   text.index("### Seeing and acting on deliveries")]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


def readme_verify():
    namespace = {}
    exec(readme_snippet("python"), namespace)
    return namespace["verify"]


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


def hooked_app(make_app, receiver, **config):
    return make_app(WEBHOOK_URL=receiver.url, WEBHOOK_SECRET=SECRET, **config)


def a_conversation(app):
    """Every kind of event in one chat: its ids are 1 to 8."""
    client = app.test_client()
    agent = new_agent(app, f"ann-{time.monotonic_ns()}", display_name="Ann", client=client)
    customer = new_customer(app, client=client, name="Pat")
    chat_id = customer.create("Hello")
    agent.reply(chat_id, "Hi")
    customer.read(chat_id, 2)
    agent.post(f"/chats/{chat_id}/read", {"seq": 2})
    agent.post(f"/chats/{chat_id}/close")
    agent.post(f"/chats/{chat_id}/reopen")
    customer.send(chat_id, "Thanks")
    return chat_id, agent


def test_every_event_arrives_signed_as_the_readme_says(make_app, receiver):
    receiver.start()
    app = hooked_app(make_app, receiver)
    chat_id, agent = a_conversation(app)
    feed = agent.get("/events", after=0).json["data"]["events"]
    assert len(feed) == 8
    wait_until(lambda: len(receiver.delivered_ids()) == 8, what="8 deliveries")
    verify = readme_verify()
    received = sorted(receiver.requests(), key=lambda request: request.event_id)
    assert [request.event_id for request in received] == list(range(1, 9))
    for request, event in zip(received, feed, strict=True):
        assert json.loads(request.body) == event
        assert request.event_type == event["type"]
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["User-Agent"].startswith("SupportZen-Webhooks/")
        assert verify(SECRET, request.signature, request.body)
        assert not verify(SECRET, request.signature, request.body + b" ")
        assert not verify("another-secret-of-the-same-length-000", request.signature,
                          request.body)
        timestamp = int(request.signature.split(",")[0].removeprefix("t="))
        assert abs(timestamp - time.time()) < 60
        assert not verify(SECRET, request.signature, request.body, now=timestamp + 301)
        assert not verify(SECRET, None, request.body)  # the header missing
        assert not verify(SECRET, "t=1,v1=", request.body)
        assert SECRET not in request.body.decode()


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_readme_javascript_check_accepts_real_deliveries_and_refuses_forgeries(
        make_app, receiver, tmp_path):
    receiver.start()
    app = hooked_app(make_app, receiver)
    new_customer(app).create("Hello from JS")
    wait_until(lambda: len(receiver.delivered_ids()) == 2, what="2 deliveries")
    request = receiver.requests()[0]
    timestamp = int(request.signature.split(",")[0].removeprefix("t="))
    (tmp_path / "verify.js").write_text(readme_snippet("javascript"))
    cases = [(SECRET, request.signature, request.body, timestamp, True),
             (SECRET, request.signature, request.body + b"x", timestamp, False),
             (SECRET[::-1], request.signature, request.body, timestamp, False),
             (SECRET, request.signature, request.body, timestamp + 301, False),
             (SECRET, "t=abc,v1=00", request.body, timestamp, False),
             (SECRET, "", request.body, timestamp, False),
             (SECRET, None, request.body, timestamp, False)]
    script = ("const { verify } = require('./verify.js');\n"
              "const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));\n"
              "console.log(JSON.stringify(cases.map(([s, h, b, n]) =>"
              " verify(s, h, Buffer.from(b, 'base64'), n))));\n")
    (tmp_path / "run.js").write_text(script)
    import base64
    payload = json.dumps([[secret, header, base64.b64encode(body).decode(), now]
                          for secret, header, body, now, _ in cases])
    result = subprocess.run(["node", "run.js"], cwd=tmp_path, input=payload,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [expected for *_, expected in cases]


def readme_verified_event():
    namespace = {}
    exec(readme_snippet("python"), namespace)
    return namespace["verified_event"]


def forged_replays(request):
    """A captured delivery sent again within the five minutes, its unsigned headers changed to
    slip past a dedupe or a router that trusts them."""
    other_id = {**request.headers, "X-Livechat-Event-Id": str(request.event_id + 1000)}
    other_type = {**request.headers, "X-Livechat-Event-Type": "chat.deleted"}
    return [other_id, other_type]


def test_the_readme_check_takes_id_and_type_from_the_signed_body_only(make_app, receiver):
    receiver.start()
    app = hooked_app(make_app, receiver)
    a_conversation(app)
    wait_until(lambda: len(receiver.delivered_ids()) == 8, what="8 deliveries")
    verified_event = readme_verified_event()
    for request in receiver.requests():
        event = verified_event(SECRET, request.headers, request.body)
        assert event == json.loads(request.body)
        assert (event["id"], event["type"]) == (request.event_id, request.event_type)
        for headers in forged_replays(request):
            assert readme_verify()(SECRET, headers["X-Livechat-Signature"], request.body)
            assert verified_event(SECRET, headers, request.body) is None
        without_hints = {name: value for name, value in request.headers.items()
                         if not name.startswith("X-Livechat-Event-")}
        assert verified_event(SECRET, without_hints, request.body) == event
        assert verified_event(SECRET, request.headers, request.body + b" ") is None


def v2_holds(secret, headers, body):
    """The v2 signature: HMAC-SHA256 of "<t>.<X-Livechat-Event-Id>.<X-Livechat-Event-Type>.
    <body>", for receivers that act on those headers. The id is digits: one that is not is
    refused first, as the docs say (else "2.message" + "created" would sign as "2" +
    "message.created")."""
    if not headers["X-Livechat-Event-Id"].isdigit() or not headers["X-Livechat-Event-Id"].isascii():
        return False
    parts = dict(item.split("=", 1) for item in headers["X-Livechat-Signature"].split(","))
    signed = (f"{parts['t']}.{headers['X-Livechat-Event-Id']}."
              f"{headers['X-Livechat-Event-Type']}.").encode() + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), parts["v2"].encode())


def test_the_id_and_type_headers_are_signed_too(make_app, receiver):
    receiver.start()
    app = hooked_app(make_app, receiver)
    a_conversation(app)
    wait_until(lambda: len(receiver.delivered_ids()) == 8, what="8 deliveries")
    for request in receiver.requests():
        assert v2_holds(SECRET, request.headers, request.body)
        for headers in forged_replays(request):
            assert not v2_holds(SECRET, headers, request.body)
        first, _, rest = request.event_type.partition(".")
        shifted = {**request.headers, "X-Livechat-Event-Id": f"{request.event_id}.{first}",
                   "X-Livechat-Event-Type": rest}  # the same signed bytes, another id
        assert not v2_holds(SECRET, shifted, request.body)
        assert not v2_holds(SECRET, request.headers, request.body + b" ")


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_readme_javascript_event_check_refuses_forged_headers(make_app, receiver,
                                                                  tmp_path):
    receiver.start()
    app = hooked_app(make_app, receiver)
    new_customer(app).create("Hello from JS")
    wait_until(lambda: len(receiver.delivered_ids()) == 2, what="2 deliveries")
    request = receiver.requests()[0]
    node_headers = [{name.lower(): value for name, value in headers.items()}
                    for headers in [request.headers, *forged_replays(request)]]
    (tmp_path / "verify.js").write_text(readme_snippet("javascript"))
    (tmp_path / "run.js").write_text(
        "const { verifiedEvent } = require('./verify.js');\n"
        "const { headers, body } = JSON.parse(require('fs').readFileSync(0, 'utf8'));\n"
        "console.log(JSON.stringify(headers.map((h) =>"
        " verifiedEvent(process.argv[2], h, Buffer.from(body, 'utf8')))));\n")
    result = subprocess.run(["node", "run.js", SECRET], cwd=tmp_path, capture_output=True,
                            input=json.dumps({"headers": node_headers,
                                              "body": request.body.decode()}),
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [json.loads(request.body), None, None]


class Script:
    """A receiver's answers in turn: each entry answers that many requests, the last one
    every request after."""

    def __init__(self, *steps):
        self.steps = list(steps)
        self.lock = threading.Lock()

    def __call__(self, request):
        with self.lock:
            count, answer = self.steps[0]
            if count is not None and len(self.steps) > 1:
                count -= 1
                self.steps[0] = (count, answer)
                if count == 0:
                    self.steps.pop(0)
        return answer


def chat_events(app, chats=3, messages=3):
    """`chats` chats of `messages` messages each, their events interleaved."""
    client = app.test_client()
    customers = [new_customer(app, client=client) for _ in range(chats)]
    chat_ids = [customer.create("first") for customer in customers]
    for number in range(messages - 1):
        for customer, chat_id in zip(customers, chat_ids, strict=True):
            assert customer.send(chat_id, f"message {number}").status_code == 200
    return chat_ids


def events_by_chat(agent):
    by_chat = {}
    for event in agent.get("/events", after=0).json["data"]["events"]:
        by_chat.setdefault(event["data"]["chat"]["chatId"], []).append(event["id"])
    return by_chat


def assert_in_order_per_chat(receiver, by_chat):
    """Every attempt of a chat's event came after the last of the chat's earlier events was
    delivered: per chat, the ids attempted never go back."""
    attempted = receiver.attempted_ids()
    for ids in by_chat.values():
        of_chat = [event_id for event_id in attempted if event_id in ids]
        assert of_chat == sorted(of_chat), of_chat


def status_of(app):
    result = app.test_cli_runner().invoke(args=["webhooks", "status"])
    assert result.exit_code == 0, result.output
    return result.output


def status_showing(app, text):
    """`webhooks status`, once it shows `text`."""
    output = status_of(app)
    return output if text in output else None


def wait_for_sender_rounds(count=3):
    """Until this process's webhook sender has finished `count` more rounds and has no attempt
    in flight: whatever they claimed has been sent and recorded, so a request that has not
    reached the receiver by then was never sent. Rings the sender's doorbell, as each new event
    does, so that it takes its rounds now (a round that claims nothing lasts BATCH_SECONDS, so
    three outlast a retry due within 0.1 s) instead of an idle second, or, for a sender that
    only purges, a minute apart."""
    sender = webhooks.running["sender"]
    finished = sender.rounds

    def moved_on():
        sender.doorbell.set()
        return sender.rounds >= finished + count and not any(sender.in_flight.values())

    wait_until(moved_on, what=lambda: f"{count} rounds of the sender after round {finished}: "
                                      f"at {sender.rounds}, in flight {sender.in_flight}")


def status_settled(database_url, total):
    """`webhooks status` of a server in a child process, once every one of the `total` events
    is recorded as delivered: nothing is left for any sender to claim."""
    output = flask_command(database_url, "webhooks", "status").stdout
    return output if f"pending 0, failed 0, delivered {total}\n" in output else None


def test_down_then_failing_then_throttling_then_back_loses_nothing(make_app, receiver):
    app = hooked_app(make_app, receiver, **FAST_RETRIES)  # the receiver is not listening
    agent = new_agent(app, "ann")
    chat_events(app, chats=3, messages=3)
    total = 3 * 2 + 3 * 2  # a chat.created and 3 message.created per chat
    wait_until(lambda: status_showing(app, "connection failed: [Errno 111] Connection refused"),
               what="refused connections")
    receiver.answer = Script((4, (500, {}, b"oops")),
                             (2, (429, {"Retry-After": "2"}, b"slow down")),
                             (None, (200, {}, b"ok")))
    receiver.start()
    wait_until(lambda: sorted(set(receiver.delivered_ids())) == list(range(1, total + 1)),
               what=lambda: f"every event delivered: {receiver.attempted_ids()} "
                            f"{[request.status for request in receiver.requests()]}")
    statuses = [request.status for request in receiver.requests()]
    assert statuses[:6] == [500] * 4 + [429] * 2
    assert len(receiver.delivered_ids()) == total  # each delivered once
    assert_in_order_per_chat(receiver, events_by_chat(agent))
    throttled = [request for request in receiver.requests() if request.status == 429]
    after_throttle = {request.event_id: request.at for request in receiver.requests()
                      if request.status == 200}
    for request in throttled:
        # Retry-After: 2. (The back-off alone would be at most 0.05 s x 2 ** 5 = 1.6 s.)
        assert after_throttle[request.event_id] - request.at >= 1.9


def test_retries_back_off_exponentially_then_give_up(make_app, receiver):
    receiver.answer = lambda request: (503, {}, b"busy")
    receiver.start()
    app = hooked_app(make_app, receiver, WEBHOOK_FIRST_RETRY_SECONDS=0.2,
                     WEBHOOK_RETRY_HOURS=3 / 3600)  # three seconds
    new_customer(app).create()
    # Event 2 waits behind event 1, then fails at once: its three seconds are over too.
    status = wait_until(lambda: status_showing(app, "failed 2"), what="both events to fail")
    assert "gave up after" in status and "HTTP 503" in status
    times = [request.at for request in receiver.requests() if request.event_id == 1]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # 0.2 s, 0.4 s, 0.8 s, 1.6 s ..., each between half and all of it (plus scheduling),
    # and a last attempt at the three-second mark.
    assert len(gaps) >= 4, gaps
    for number, gap in enumerate(gaps[:3]):
        delay = 0.2 * 2 ** number
        assert delay / 2 - 0.02 <= gap, gaps
    assert gaps[2] > gaps[0]  # it grows
    assert times[-1] - times[0] >= 2.5, gaps
    second = [request.at for request in receiver.requests() if request.event_id == 2]
    assert len(second) == 1 and second[0] > times[-1]  # event 2 of the chat waited behind it


def test_delivered_events_are_purged_after_the_retention_but_pending_ones_are_kept(
        make_app, receiver):
    config = {"EVENT_RETENTION_DAYS": 1 / 86400, **FAST_RETRIES}  # one second
    receiver.start()
    app = hooked_app(make_app, receiver, **config)
    agent = new_agent(app, "ann")
    new_customer(app).create()
    wait_until(lambda: status_showing(app, "delivered 2"), what="two deliveries")
    receiver.stop()
    new_customer(app).create()  # events 3 and 4 stay pending
    wait_until(lambda: status_showing(app, "connection failed"),
               what="a failed attempt")
    time.sleep(1.2)  # the events' age, not a guess at how long anything takes
    release_database()
    app = hooked_app(make_app, receiver, **config)  # a start purges at once
    agent = type(agent)(agent.name, agent.token, app.test_client())
    status = wait_until(lambda: status_showing(app, "delivered 0"), what="the purge")
    assert "pending 2" in status
    assert agent.get("/events", after=0).status_code == 410  # 1 and 2 went
    kept = agent.get("/events", after=2).json["data"]["events"]
    assert [event["id"] for event in kept] == [3, 4]  # still to be delivered
    receiver.start()
    wait_until(lambda: sorted(receiver.delivered_ids()) == [1, 2, 3, 4],
               what="the kept events delivered")


def test_a_refusing_receiver_fails_the_event_at_once_and_holds_up_no_other(make_app,
                                                                           receiver):
    first_seen = {}

    def refuse_event_2(request):
        first_seen.setdefault(request.event_id, 0)
        first_seen[request.event_id] += 1
        return (422, {}, b"no") if request.event_id == 2 else ok(request)

    receiver.answer = refuse_event_2
    receiver.start()
    app = hooked_app(make_app, receiver, **FAST_RETRIES)
    chat_id = new_customer(app).create()
    wait_until(lambda: 2 in receiver.attempted_ids(), what="event 2 attempted")
    new_customer(app).send(chat_id)  # not theirs: refused, no event
    other = new_customer(app).create()
    wait_until(lambda: {1, 3, 4} <= set(receiver.delivered_ids()), what="the others delivered")
    # Events 3 and 4 are the other chat's, delivered while event 2 of the first one failed.
    assert {json.loads(request.body)["data"]["chat"]["chatId"] for request in
            receiver.requests() if request.event_id in (3, 4)} == {other}
    status = wait_until(lambda: status_showing(app, "delivered 3"),
                        what="the deliveries recorded")
    assert "failed 1" in status and "HTTP 422" in status, status
    wait_for_sender_rounds()  # a retry, had there been one, would have been sent in them
    assert first_seen[2] == 1
    runner = app.test_cli_runner()
    receiver.answer = ok
    result = runner.invoke(args=["webhooks", "retry", "--failed", "--since", "1h"])
    assert "1 failed queued again" in result.output, result.output
    wait_until(lambda: 2 in receiver.delivered_ids(), what="event 2 sent again")


def test_an_attempt_ends_after_five_seconds_even_when_the_receiver_trickles(make_app,
                                                                           receiver):
    receiver.dribble_seconds = 0.5  # every read gets a byte well within any socket timeout
    receiver.start()
    app = hooked_app(make_app, receiver, WEBHOOK_FIRST_RETRY_SECONDS=60)
    new_customer(app).create()
    status = wait_until(lambda: status_showing(app, "timed out after 5 s"),
                        what="the first attempt to time out")
    first = receiver.requests()[0]
    assert "pending 2" in status
    # Cut at 5 s, not when the answer ends (45 bytes at 0.5 s each: after 22 s): the sender
    # recorded the time-out while the receiver was still trickling.
    assert not first.answered
    assert time.monotonic() - first.at < 3 * webhook_http.TIMEOUT_SECONDS


def test_408_is_retried(make_app, receiver):
    receiver.answer = Script((1, (408, {}, b"")), (None, (200, {}, b"ok")))
    receiver.start()
    app = hooked_app(make_app, receiver, **FAST_RETRIES)
    new_customer(app).create()
    wait_until(lambda: sorted(receiver.delivered_ids()) == [1, 2], what="both delivered")
    assert receiver.attempted_ids().count(1) == 2


def test_redirects_are_not_followed(make_app, receiver):
    def redirect(request):
        return 307, {"Location": receiver.url + "&moved=1"}, b""

    receiver.answer = redirect
    receiver.start()
    app = hooked_app(make_app, receiver, **FAST_RETRIES)
    new_customer(app).create()
    status = wait_until(lambda: status_showing(app, "failed 2"),
                        what="both deliveries failed")
    assert "HTTP 307: redirects are not followed" in status
    # (A redirect followed would have come within the attempt, before it was recorded; a
    # retry, within these rounds.)
    wait_for_sender_rounds()
    assert sorted(receiver.attempted_ids()) == [1, 2]  # once each, never to the new place
    assert not [request for request in receiver.requests() if "moved" in request.path]


def test_several_urls_each_get_every_event_in_their_own_state(make_app, receiver, request):
    down = Receiver()  # never listens
    request.addfinalizer(down.close)
    receiver.start()
    app = make_app(WEBHOOK_URL=f"{receiver.url},{down.url}", WEBHOOK_SECRET=SECRET,
                   **FAST_RETRIES)
    chat_events(app, chats=2, messages=2)
    wait_until(lambda: sorted(receiver.delivered_ids()) == [1, 2, 3, 4, 5, 6],
               what=lambda: f"the live receiver to get every event: {receiver.attempted_ids()}")
    # The last answer reaches the receiver a moment before the sender records it.
    status = wait_until(lambda: status_showing(app, "delivered 6"),
                        what="the deliveries recorded")
    lines = status.splitlines()
    assert lines[0] == f"http://127.0.0.1:{receiver.port}/... (endpoint 1)"
    assert lines[1].startswith("  pending 0, failed 0, delivered 6")
    assert lines[2] == f"http://127.0.0.1:{down.port}/... (endpoint 2)"
    assert lines[3].startswith("  pending 6 (oldest ")
    assert "connection failed" in lines[4]
    assert "secret-part" not in status and SECRET not in status


def test_webhooks_test_pings_every_url_and_shows_the_answer(make_app, receiver):
    receiver.answer = lambda request: (200, {}, b"pong")
    receiver.start()
    app = hooked_app(make_app, receiver)
    result = app.test_cli_runner().invoke(args=["webhooks", "test"])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(rf"http://127\.0\.0\.1:{receiver.port}/\.\.\.: ok: HTTP 200 in "
                        r"\d+ ms: 'pong'\n", result.output)
    ping = receiver.requests()[0]
    assert ping.event_type == "ping" and ping.event_id == 0
    assert readme_verify()(SECRET, ping.signature, ping.body)
    receiver.stop()
    result = app.test_cli_runner().invoke(args=["webhooks", "test"])
    assert result.exit_code == 1 and "FAILED: connection failed" in result.output


def test_webhook_settings_are_checked_at_start(make_app):
    import settings

    with pytest.raises(settings.SettingError, match="WEBHOOK_SECRET: is required"):
        make_app(WEBHOOK_URL="https://hooks.example.com/x")
    with pytest.raises(settings.SettingError, match="at least 32 characters"):
        make_app(WEBHOOK_URL="https://hooks.example.com/x", WEBHOOK_SECRET="short")
    for url in ("ftp://hooks.example.com/x", "https:///x", "hooks.example.com",
                "https://hooks.example.com:99999/", "https://h.example.com/#frag"):
        with pytest.raises(settings.SettingError, match="WEBHOOK_URL"):
            make_app(WEBHOOK_URL=url, WEBHOOK_SECRET=SECRET)


@pytest.mark.slow
def test_a_missing_secret_stops_the_service_with_one_line(database_url):
    environment_result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "webhooks", "status"], cwd=ROOT,
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "DATABASE_URL": database_url,
             "WEBHOOK_URL": "https://hooks.example.com/x", "WEBHOOK_SECRET": ""})
    assert environment_result.returncode == 2
    assert environment_result.stderr.strip().splitlines() == [
        "error: setting WEBHOOK_SECRET: is required when WEBHOOK_URL is set: at least 32 "
        "characters, the same on every instance"]


# --- real servers ---------------------------------------------------------------------------

def server_env(receiver, **more):
    return {"WEBHOOK_URL": receiver.url, "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_FIRST_RETRY_SECONDS": "0.05", **more}


def send_timed(server, email, token, chat_id, count):
    session = requests.Session()
    times = []
    for number in range(count):
        started = time.monotonic()
        response = session.post(f"{server.url}/api/client/live/chat", timeout=30,
                                json={"data": {"email": email, "chat_id": chat_id,
                                               "message": f"timed {number}"}},
                                headers={"Authorization": f"Bearer {token}"})
        times.append(time.monotonic() - started)
        assert response.status_code == 200, response.text
    return sorted(times)[len(times) // 2]


@pytest.mark.slow
def test_a_receiver_taking_ten_seconds_does_not_slow_a_customer_send(tmp_path, database_url,
                                                                     app, receiver):
    (email, token), = seed_customers(app, 1)
    release_database()
    release = threading.Event()

    def slow(request):
        release.wait(10)
        return ok(request)

    receiver.start()
    with running_server(tmp_path, database_url, env=server_env(receiver)) as server:
        chat_id = open_chat(server, (email, token))
        wait_until(lambda: len(receiver.delivered_ids()) == 2, what="the first deliveries")
        without = send_timed(server, email, token, chat_id, 30)
        wait_until(lambda: len(receiver.delivered_ids()) == 32, what="those deliveries")
        receiver.answer = slow
        send_timed(server, email, token, chat_id, 1)
        [hanging, *_] = wait_until(lambda: [request for request in receiver.requests()
                                            if request.status == 0],
                                   what="a delivery that hangs")
        with_slow = send_timed(server, email, token, chat_id, 30)
        # The sends were measured while a delivery hung: the one that hung before they began
        # is still unanswered now that they are done.
        assert hanging.status == 0
        # The sender gives up on the attempt after 5 s and tries again.
        again = wait_until(lambda: [request for request in receiver.requests()
                                    if request.event_id == hanging.event_id][1:],
                           what="the attempt after the timeout")
        release.set()
        status = flask_command(database_url, "webhooks", "status").stdout
    assert "timed out after 5 s" in status, status
    # Given up at 5 s: before the receiver would have answered it, at 10 s.
    assert 5 <= again[0].at - hanging.at < 10
    print(f"send median: {without * 1000:.1f} ms without, {with_slow * 1000:.1f} ms with a "
          "receiver taking 10 s")
    # A send held up by the hung delivery would wait seconds (its 5 s timeout, or the
    # receiver's 10 s); a loaded machine adds milliseconds to both medians.
    assert with_slow < without + 1


@pytest.mark.slow
def test_a_server_killed_mid_delivery_delivers_everything_after_a_restart(
        tmp_path, database_url, app, receiver):
    customers = seed_customers(app, 3)
    release_database()
    hold = threading.Event()

    def hold_event_4(request):
        if request.event_id == 4:
            hold.wait(30)
        return ok(request)

    receiver.answer = hold_event_4
    receiver.start()
    env = server_env(receiver, WEBHOOK_CLAIM_SECONDS="6")
    with running_server(tmp_path, database_url, env=env) as server:
        chats = [open_chat(server, (email, token)) for email, token in customers[:2]]
        wait_until(lambda: 4 in receiver.attempted_ids(), what="event 4 in flight")
        # The others recorded as delivered: only event 4's attempt is cut off by the kill.
        wait_until(lambda: "delivered 3" in flask_command(database_url, "webhooks",
                                                          "status").stdout,
                   what="events 1 to 3 recorded as delivered")
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
    hold.set()
    cut_off = {4}
    with running_server(tmp_path, database_url, env=env) as server:
        email, token = customers[2]
        chats.append(open_chat(server, (email, token)))
        # (The receiver cannot tell whether its answer to the cut-off attempt arrived: the
        # kernel takes the write even though the process at the other end is gone.)
        wait_until(lambda: set(receiver.delivered_ids()) >= set(range(1, 7))
                   and receiver.attempted_ids().count(4) >= 2, timeout=60,
                   what="every event delivered after the restart, event 4 again")
        # Every delivery recorded as delivered: nothing is left for the sender to send again.
        wait_until(lambda: status_settled(database_url, 6), timeout=60,
                   what="every delivery recorded")
    attempted = receiver.attempted_ids()
    assert sorted(set(attempted)) == list(range(1, 7))
    twice = {event_id for event_id in set(attempted) if attempted.count(event_id) > 1}
    assert twice == cut_off  # sent again after the claim ran out, and only it


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("TEST_DATABASE_URL"), reason="runs in the PostgreSQL pass")
def test_two_postgres_instances_deliver_each_event_once(tmp_path, database_url, app,
                                                         receiver):
    customers = seed_customers(app, 8)
    release_database()
    receiver.start()
    env = server_env(receiver)
    with running_server(tmp_path, database_url, env=env) as one, \
            running_server(tmp_path, database_url, env=env) as two:
        def write(server, email, token):
            chat_id = open_chat(server, (email, token))
            send_timed(server, email, token, chat_id, 10)

        writers = [threading.Thread(target=write, args=(server, email, token))
                   for server, (email, token) in zip([one, two] * 4, customers, strict=True)]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join(60)
        total = 8 * 12
        wait_until(lambda: len(set(receiver.delivered_ids())) == total, timeout=60,
                   what="every event delivered")
        # Every delivery recorded as delivered: nothing is left for either sender to take.
        wait_until(lambda: status_settled(database_url, total), timeout=60,
                   what="every delivery recorded")
    delivered = receiver.delivered_ids()
    assert sorted(delivered) == list(range(1, total + 1))


@pytest.mark.slow
def test_a_separate_worker_delivers_and_stops_cleanly(tmp_path, database_url, make_app,
                                                      receiver):
    receiver.start()
    app = hooked_app(make_app, receiver, WEBHOOK_SENDER=False)
    new_customer(app).create()
    wait_for_sender_rounds()  # the server's own sender is off: its rounds send nothing
    assert receiver.requests() == []
    release_database()
    worker = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "webhooks",
                               "run"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "DATABASE_URL": database_url,
                                   **server_env(receiver)})
    try:
        wait_until(lambda: sorted(receiver.delivered_ids()) == [1, 2], what="the worker")
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0, stderr
    assert "stopping" in stderr
    assert webhook_http.USER_AGENT in receiver.requests()[0].headers["User-Agent"]


def test_a_retry_after_date_is_honoured(make_app, receiver):
    def busy_once(request):
        if len(receiver.requests()) == 1:
            later = email.utils.formatdate(time.time() + 3, usegmt=True)
            return 503, {"Retry-After": later}, b"maintenance"
        return ok(request)

    receiver.answer = busy_once
    receiver.start()
    app = hooked_app(make_app, receiver, **FAST_RETRIES)
    new_customer(app).create()
    wait_until(lambda: 1 in receiver.delivered_ids(), what="event 1 delivered")
    first, second = [request.at for request in receiver.requests() if request.event_id == 1]
    assert second - first >= 1.5  # a whole-second date, three seconds ahead


def test_the_commands_say_when_there_is_no_webhook(app):
    runner = app.test_cli_runner()
    assert runner.invoke(args=["webhooks", "status"]).output == (
        "no webhook endpoint yet (WEBHOOK_URL is not set)\n")
    for command in (["run"], ["retry"], ["test"]):
        result = runner.invoke(args=["webhooks", *command])
        assert result.exit_code == 1
        assert "WEBHOOK_URL is not set" in result.output


@pytest.mark.parametrize("since", ["yesterday", "2h30m", "-1h", "2026-13-01", "99999999999d",
                                   "999999999999999999999999s", "0001-01-01T00:00:00+14:00"])
def test_retry_refuses_a_since_it_cannot_read(make_app, receiver, since):
    app = hooked_app(make_app, receiver)
    result = app.test_cli_runner().invoke(args=["webhooks", "retry", "--since", since])
    assert result.exit_code == 2
    assert "use 30m, 2h, 7d or an ISO time" in result.output


def test_a_retry_after_of_zero_waits_a_first_retry_and_a_huge_one_the_deadline(make_app,
                                                                               receiver):
    def busy(request):
        if request.event_id == 1:  # asks for no pause at all, each time
            return 503, {"Retry-After": "0"}, b""
        return 503, {"Retry-After": "9" * 400}, b""  # asks for longer than the world

    receiver.answer = busy
    receiver.start()
    app = hooked_app(make_app, receiver, WEBHOOK_FIRST_RETRY_SECONDS=0.5,
                     WEBHOOK_RETRY_HOURS=2 / 3600)  # two seconds
    first_chat = new_customer(app).create()
    new_customer(app).create()
    # (The chats' second events fail at once once they come up: their time is over too.)
    status = wait_until(lambda: status_showing(app, "failed 4"), what="every event to fail")
    assert "gave up after" in status
    times = [request.at for request in receiver.requests() if request.event_id == 1]
    assert 2 <= len(times) <= 6, times  # every 0.5 s at most, not every round
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap >= 0.45 for gap in gaps[:-1]), gaps  # (the last one: at the deadline)
    huge = [request.at for request in receiver.requests() if request.event_id == 3]
    assert len(huge) == 2 and huge[1] - huge[0] >= 1.5  # the next try was the deadline's
    # (Event 1, asking for no pause, is the first chat's; event 3, the huge one, the second's.)
    chat_of = {request.event_id: json.loads(request.body)["data"]["chat"]["chatId"]
               for request in receiver.requests()}
    assert chat_of[1] == first_chat and chat_of[3] != first_chat


def test_retry_sends_pending_ones_now_and_since_limits_which(make_app, receiver):
    refuse = {"on": True}
    receiver.answer = lambda request: (500, {}, b"") if refuse["on"] else ok(request)
    receiver.start()
    app = hooked_app(make_app, receiver, WEBHOOK_FIRST_RETRY_SECONDS=3600)
    runner = app.test_cli_runner()
    new_customer(app).create()  # events 1 and 2: 1 waits an hour for its retry
    wait_until(lambda: status_showing(app, "HTTP 500"), what="a first attempt")
    refuse["on"] = False
    result = runner.invoke(args=["webhooks", "retry"])
    assert result.exit_code == 0 and ": 2 pending due now" in result.output, result.output
    wait_until(lambda: sorted(receiver.delivered_ids()) == [1, 2], what="the retry now")

    refused = {3, 4, 7}
    receiver.answer = lambda request: (400, {}, b"no") if request.event_id in refused \
        else ok(request)
    new_customer(app).create()  # events 3 and 4 fail at once
    wait_until(lambda: status_showing(app, "failed 2"), what="events 3 and 4 to fail")
    time.sleep(0.01)  # an age: events 3 and 4 are older than `between`, event 7 younger
    between = models_now_iso()
    other = new_customer(app)
    other.send(other.create())  # events 5 and 6 are delivered, 7 fails
    wait_until(lambda: status_showing(app, "failed 3"), what="event 7 to fail")
    refused.clear()
    result = runner.invoke(args=["webhooks", "retry", "--failed", "--since", between])
    assert "1 failed queued again" in result.output, result.output
    wait_until(lambda: 7 in receiver.delivered_ids(), what="event 7 sent again")
    assert "failed 2" in status_of(app)  # events 3 and 4, from before --since, stay failed
    assert not {3, 4} & set(receiver.delivered_ids())


def models_now_iso():
    return models.utcnow().isoformat() + "Z"


def test_events_a_stopped_sender_has_not_queued_are_not_purged(make_app, receiver):
    config = {"EVENT_RETENTION_DAYS": 1 / 86400, "WEBHOOK_SENDER": False}  # one second
    receiver.start()
    app = hooked_app(make_app, receiver, **config)
    agent = new_agent(app, "ann")
    new_customer(app).create()
    time.sleep(1.2)  # the events' age, not a guess at how long anything takes
    release_database()
    app = hooked_app(make_app, receiver, **config)  # a start purges at once
    agent = type(agent)(agent.name, agent.token, app.test_client())
    wait_until(lambda: webhooks.running["sender"].rounds >= 1,
               what="the sender's first round, which purges")
    assert [event["id"] for event in agent.get("/events", after=0).json["data"]["events"]] == [
        1, 2]
    release_database()
    hooked_app(make_app, receiver, EVENT_RETENTION_DAYS=1 / 86400)  # a sender, at last
    wait_until(lambda: sorted(receiver.delivered_ids()) == [1, 2], what="the late delivery")


@pytest.mark.skipif(not os.environ.get("TEST_DATABASE_URL"), reason="runs in the PostgreSQL pass")
def test_two_senders_claiming_at_once_never_take_the_same_delivery(make_app, receiver):
    app = hooked_app(make_app, receiver, WEBHOOK_SENDER=False)  # (the receiver is down)
    for _ in range(20):
        new_customer(app).create()  # 20 chats: 20 heads to claim
    webhooks.fan_out(1)
    models.database.close()
    claimed, start = [], threading.Barrier(4)

    def take():
        start.wait()
        for _ in range(5):
            claimed.append([row.id for row in webhooks.claim(
                1, 2, datetime.timedelta(seconds=60))])
        models.database.close()

    takers = [threading.Thread(target=take) for _ in range(4)]
    for taker in takers:
        taker.start()
    for taker in takers:
        taker.join(30)
    taken = [delivery for batch in claimed for delivery in batch]
    assert len(taken) == 20 and len(set(taken)) == 20  # every head once, none twice


def test_a_user_and_password_in_the_url_are_sent_as_basic_auth(make_app, receiver):
    receiver.start()
    url = receiver.url.replace("http://", "http://hook-user:pass%20word@")
    app = make_app(WEBHOOK_URL=url, WEBHOOK_SECRET=SECRET)
    new_customer(app).create()
    wait_until(lambda: len(receiver.delivered_ids()) == 2, what="two deliveries")
    assert {request.headers["Authorization"] for request in receiver.requests()} == {
        "Basic aG9vay11c2VyOnBhc3Mgd29yZA=="}  # hook-user:pass word
    assert "pass" not in status_of(app)


def test_a_url_removed_then_added_back_goes_on_where_it_can(make_app, receiver):
    config = {"EVENT_RETENTION_DAYS": 1 / 86400, **FAST_RETRIES}  # one second
    app = hooked_app(make_app, receiver, **config)  # the receiver is down
    customer = new_customer(app)
    chat_id = customer.create()  # events 1 and 2, pending
    time.sleep(1.2)  # their age, not a guess at how long anything takes
    assert customer.send(chat_id).status_code == 200  # event 3
    release_database()
    make_app(**config)  # without the URL: 1 and 2 are purged, their deliveries kept
    wait_until(lambda: webhooks.running["sender"].rounds >= 1,
               what="the sender's first round, which purges")
    release_database()
    receiver.start()
    app = hooked_app(make_app, receiver, **config)
    status = wait_until(lambda: status_showing(app, "delivered 1"), what="event 3 delivered")
    assert receiver.delivered_ids() == [3]
    assert "failed 2" in status and "the event was purged before delivery" in status

