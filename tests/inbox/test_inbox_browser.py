"""The inbox page end to end: Debian's Chromium, driven by Playwright, against a real server.

The customer side talks to the same server over HTTP, as a client app would. Screenshots go to
INBOX_ARTIFACTS (default: test-artifacts/inbox/ in the repository) as the run's artifacts.
Without /usr/bin/chromium (`apt-get install chromium`) or the playwright package these tests
skip, saying why; CI installs both.
"""
import datetime
import json
import os
import pathlib
import re
import uuid

import pytest
import requests

import events
from chat import accounts
from support.helpers import (
    ROOT,
    new_agent,
    new_customer,
    release_database,
    running_server,
    sign,
    wait_until,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
ARTIFACTS = pathlib.Path(os.environ.get("INBOX_ARTIFACTS")
                         or pathlib.Path(ROOT) / "test-artifacts" / "inbox")
XSS_MESSAGE = "<img src=x onerror=alert(1)>"
# What the page gets for any address not on the test's server (Playwright answers it).
PICTURE = (b'<svg xmlns="http://www.w3.org/2000/svg" width="48" height="32">'
           b'<rect width="48" height="32" fill="teal"/></svg>')

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed "
    "(pip install -r requirements-dev.txt)")
expect = sync_api.expect
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=(
        f"Debian's Chromium is not installed ({CHROMIUM}): apt-get install chromium")),
]


# --- the cast: a server, a customer who talks to it over HTTP, an agent's browser ------------

class HttpCustomer:
    """A customer app: the spec's endpoints over HTTP, signed with the HMAC token."""

    def __init__(self, server, email, key):
        self.server, self.email = server, email
        self.headers = {"Authorization": f"Bearer {sign(email, key)}"}

    def call(self, endpoint, **data):
        response = requests.post(f"{self.server.url}/api/client/live/{endpoint}",
                                 json={"data": {"email": self.email, **data}},
                                 headers=self.headers, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    def create(self, message, **data):
        return self.call("create", created_at=1679223400, message=message, **data)["chatId"]

    def send(self, chat_id, message):
        return self.call("chat", chat_id=chat_id, message=message)

    def seen(self, chat_id):
        """Every message the customer's poll returns: [(seq, sender, message)]."""
        messages = self.call("messages", chat_id=chat_id)["messages"]
        return [(item["seq"], item["sender"], item["message"]) for item in messages]


def agent_api(server, token, path):
    response = requests.get(f"{server.url}/api/agent{path}", timeout=10,
                            headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return response.json()["data"]


@pytest.fixture
def cast(app, tmp_path, database_url):
    """An agent and a customer in the database, the server they talk to, and a way to start
    that server again where the page expects it."""
    ann = new_agent(app, "ann", display_name="Ann")
    key = str(uuid.uuid4())
    new_customer(app, email="pat@example.com", uuid=key, name="Pat")
    release_database()
    state = {}

    def start(port=None):
        state["server"] = running_server(tmp_path, database_url, port=port,
                                         env={"WAITRESS_THREADS": "8"})
        return state["server"].__enter__()

    server = start()
    yield {"server": server, "token": ann.token, "app": app, "start": start,
           "stop": lambda: state["server"].__exit__(None, None, None),
           "customer": HttpCustomer(server, "pat@example.com", key), "key": key}
    state["server"].__exit__(None, None, None)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Watched:
    """A page, with the dialogs it opened and the script errors and policy violations it
    reported (all must stay empty: customer text runs nothing, the page breaks no rule)."""

    def __init__(self, browser, width=1280, height=800):
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.dialogs, self.errors = [], []
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        self.page.on("console", self._console)

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _console(self, message):
        if "Content Security Policy" in message.text or message.type == "assert":
            self.errors.append(message.text)

    def screenshot(self, name):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"))

    def close(self):
        self.context.close()


@pytest.fixture
def watched(browser):
    pages = []

    def open_page(**size):
        page = Watched(browser, **size)
        pages.append(page)
        return page

    yield open_page
    for page in pages:
        problems = page.dialogs + page.errors
        page.close()
        assert problems == [], problems


def sign_in_by_link(page, server, token):
    page.goto(f"{server.url}/inbox#token={token}")
    expect(page.locator("#app")).to_be_visible()


def row(page, chat_id):
    return page.locator(f'#chat-list li.chat-row[data-chat-id="{chat_id}"]')


def open_chat(page, chat_id):
    row(page, chat_id).locator("button").first.click()
    expect(page.locator("#chat")).to_be_visible()


def send_reply(page, text):
    box = page.locator("#reply-input")
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("")


def transcript_item(page, text, kind="msg"):
    return page.locator(f"#transcript .{kind}").filter(has_text=text)


# --- the tests --------------------------------------------------------------------------------

def test_an_agent_works_a_chat_from_sign_in_to_a_server_restart(cast, watched):
    server, customer, token = cast["server"], cast["customer"], cast["token"]
    chat_id = customer.create("Hello, my invoice is wrong", name="Premium Plan", plan_id=5)
    requests.put(f"{server.url}/api/agent/replies/thanks", timeout=10,
                 headers={"Authorization": f"Bearer {token}"},
                 json={"data": {"text": "Thanks for waiting!"}}).raise_for_status()
    # 280 KB of saved replies sorted before it: "thanks" comes on the second page of
    # /replies (pages stop at MAX_POLL_PAGE_BYTES, 256 KiB), which the page must follow.
    for number in range(7):
        requests.put(f"{server.url}/api/agent/replies/big-{number}", timeout=10,
                     headers={"Authorization": f"Bearer {token}",
                              "Content-Type": "application/json"},
                     data=json.dumps({"data": {"text": "\U0001f600" * 10_000}},
                                     ensure_ascii=False).encode()).raise_for_status()
    assert agent_api(server, token, "/replies")["has_more"] is True

    # Signing in through the link: the token leaves the address bar, stays in the session.
    watched_page = watched()
    page = watched_page.page
    sign_in_by_link(page, server, token)
    assert "token" not in page.url
    assert page.evaluate("Object.values(sessionStorage).join(' ')").count(token) == 1

    # Unassigned, with its badge; assigning it to oneself moves the counts.
    page.locator("#tab-unassigned").click()
    expect(row(page, chat_id)).to_be_visible()
    expect(row(page, chat_id).locator(".badge")).to_have_text("1")
    expect(row(page, chat_id).locator(".email")).to_have_text("pat@example.com")
    expect(page.locator("#tab-unassigned .count")).to_have_text("1")
    expect(page.locator("#tab-mine .count")).to_have_text("0")
    watched_page.screenshot("01-unassigned")
    open_chat(page, chat_id)
    expect(transcript_item(page, "Hello, my invoice is wrong")).to_be_visible()
    # The plan and the account's age are the customer's app's word, and say so.
    claims = page.locator("#customer-claims")
    expect(claims.get_by_role("heading")).to_have_text(re.compile(
        "Reported by the client app.*not verified"))
    expect(claims.locator("#customer-plan")).to_have_text("Premium Plan")
    expect(claims.locator("#customer-created")).not_to_have_text("Unknown")
    expect(claims.locator("#customer-email")).to_have_count(0)  # the token vouches for that
    # In the list and the chat's header too, visibly (a hover title alone reaches few).
    for plan in (row(page, chat_id).locator(".plan"), page.locator("#chat-plan")):
        expect(plan).to_have_text("app says: Premium Plan")
        expect(plan).to_have_attribute("aria-label", re.compile("client app.*not verified"))
    wait_until(lambda: agent_api(server, token, f"/chats/{chat_id}")["agent_read_seq"] == 1,
               what="opening the chat to move the agents' read mark")
    page.locator("#assign-me").click()
    expect(page.locator("#tab-mine .count")).to_have_text("1")
    expect(page.locator("#tab-unassigned .count")).to_have_text("0")
    assert agent_api(server, token, f"/chats/{chat_id}")["assignee"]["name"] == "ann"

    # A reply (Shift+Enter makes a second line) reaches the customer's poll.
    box = page.locator("#reply-input")
    box.fill("Sorry about that.")
    box.press("Shift+Enter")
    box.type("Let me check.")
    box.press("Enter")
    expect(box).to_have_value("")
    wait_until(lambda: (2, "agent", "Sorry about that.\nLet me check.") in customer.seen(
        chat_id), what="the reply in the customer's poll")

    # A saved reply by its shortcut.
    box.fill("/thanks")
    box.press("Enter")
    expect(box).to_have_value("Thanks for waiting!")
    box.press("Enter")
    wait_until(lambda: (3, "agent", "Thanks for waiting!") in customer.seen(chat_id),
               what="the saved reply in the customer's poll")

    # A note: on the page, marked as one; never in the customer's poll, not even as a gap.
    page.locator("#note-toggle").check()
    send_reply(page, "Refund approved by finance")
    expect(transcript_item(page, "Refund approved by finance", "msg-note")).to_be_visible()
    page.locator("#note-toggle").uncheck()
    customer.send(chat_id, "Thank you!")
    expect(transcript_item(page, "Thank you!", "msg-user")).to_be_visible()  # no reload
    seen = customer.seen(chat_id)
    assert [seq for seq, _, _ in seen] == [1, 2, 3, 4]
    assert not any("Refund" in text for _, _, text in seen)
    page.locator("#tab-all").click()
    expect(row(page, chat_id)).to_be_visible()
    watched_page.screenshot("02-chat")  # (the README's screenshot)

    # The server goes away: the page says so, keeps the half-typed reply, and when the
    # server is back catches up with what was sent meanwhile.
    box.fill("half-typed answer")
    port = server.url.rsplit(":", 1)[1]
    cast["stop"]()
    expect(page.locator("#connection")).to_be_visible(timeout=40_000)
    expect(page.locator("#connection")).to_contain_text("Offline")
    watched_page.screenshot("03-offline")
    # The customer writes while the server is down (into its database).
    meanwhile = new_customer(cast["app"], email="pat@example.com", uuid=cast["key"])
    assert meanwhile.send(chat_id, "Are you still there?").status_code == 200
    release_database()
    cast["start"](port=int(port))
    expect(transcript_item(page, "Are you still there?", "msg-user")).to_be_visible(
        timeout=60_000)
    expect(page.locator("#connection")).to_be_hidden()
    expect(box).to_have_value("half-typed answer")
    expect(page.locator("#chat-title")).to_contain_text("pat@example.com")


def test_a_page_whose_cursor_expired_reloads_what_it_shows(cast, watched):
    """The events the page missed while away were purged: the feed answers 410, and the page
    reloads its lists and the open chat instead of silently missing them."""
    server, customer, token = cast["server"], cast["customer"], cast["token"]
    chat_id = customer.create("Before the outage")
    page = watched().page
    sign_in_by_link(page, server, token)
    open_chat(page, chat_id)
    port = int(server.url.rsplit(":", 1)[1])
    cast["stop"]()
    expect(page.locator("#connection")).to_be_visible(timeout=40_000)
    # (Requests of the test client outside any app context: each gets its own `g`.)
    meanwhile = new_customer(cast["app"], email="pat@example.com", uuid=cast["key"])
    assert meanwhile.send(chat_id, "Lost from the feed").status_code == 200
    other = meanwhile.create("A chat the page never heard of")
    with cast["app"].app_context():
        assert events.purge(datetime.timedelta(0)) > 0  # every event, those it missed too
    release_database()
    cast["start"](port=port)
    expect(transcript_item(page, "Lost from the feed", "msg-user")).to_be_visible(
        timeout=60_000)
    expect(row(page, other)).to_be_visible()
    expect(page.locator("#connection")).to_be_hidden()


def test_customer_text_is_shown_as_text_and_runs_nothing(cast, watched):
    server, customer, token = cast["server"], cast["customer"], cast["token"]
    chat_id = customer.create(XSS_MESSAGE, image_url="https://example.com/cat.png")
    customer.call("chat", chat_id=chat_id, message="A photo",
                  image_url="https://img.example.test/photo.png")
    for text in ("javascript link", "svg link", "address link"):
        customer.send(chat_id, text)
    # Addresses the customer API would refuse, as an older release or an import left them.
    with cast["app"].app_context():
        import models
        for body, url in (("javascript link", "javascript:alert(1)"),
                          ("svg link", 'https://e.com/"><svg onload=alert(1)>'),
                          ("address link", "https://93.184.216.34/cat.png")):
            models.Message.update(image_url=url).where(models.Message.body == body).execute()
    # Two customers whose addresses look the same: the first "a" of one is Cyrillic.
    look_alike = new_customer(cast["app"], email="\u0430lice@example.com").create("It is Alice")
    plain = new_customer(cast["app"], email="alice@example.com").create("Alice here")
    release_database()

    watched_page = watched()
    page = watched_page.page
    # Every request for another host is recorded and answered here: nothing leaves the machine.
    elsewhere = []

    def answer_elsewhere(route):
        elsewhere.append((route.request.url, route.request.headers.get("referer")))
        route.fulfill(status=200, content_type="image/svg+xml", body=PICTURE)

    page.route(lambda url: not url.startswith(f"{server.url}/"), answer_elsewhere)
    sign_in_by_link(page, server, token)
    expect(row(page, chat_id).locator(".preview")).to_contain_text("address link")

    # The look-alike address is marked wherever it shows, its Cyrillic letter set apart; the
    # plain one is not.
    warned, unwarned = row(page, look_alike), row(page, plain)
    expect(warned.locator(".email")).to_have_text("\u0430lice@example.com")
    expect(warned.locator(".email .non-ascii")).to_have_text("\u0430")
    warning = warned.locator(".address-warning")
    expect(warning).to_have_text("mixed scripts: Latin + Cyrillic")
    expect(warning).to_have_attribute("title", re.compile(r"U\+0430 Cyrillic"))
    expect(warning).to_have_attribute("aria-label", re.compile("mixes Latin and Cyrillic"))
    expect(unwarned.locator(".email")).to_have_text("alice@example.com")
    expect(unwarned.locator(".address-warning")).to_be_hidden()
    open_chat(page, look_alike)
    expect(page.locator("#chat-title .address-warning")).to_have_text(
        "mixed scripts: Latin + Cyrillic")
    expect(page.locator("#customer-details .address-warning")).to_be_visible()
    expect(page.locator("#customer-email")).to_contain_text("U+0430")
    open_chat(page, plain)
    expect(page.locator("#chat-title")).to_have_text("alice@example.com")
    expect(page.locator(".chat-pane .address-warning:visible, "
                        "#customer-panel .address-warning:visible")).to_have_count(0)

    open_chat(page, chat_id)
    first = transcript_item(page, XSS_MESSAGE)
    expect(first.locator(".body")).to_have_text(XSS_MESSAGE)
    # A thumbnail waits for the agent's click: opening the chat told no host it was read.
    photo = transcript_item(page, "A photo")
    load = photo.get_by_role("button")
    expect(load).to_have_text("Image from img.example.test \u2014 click to load")
    expect(first.get_by_role("button")).to_contain_text("example.com")
    expect(page.locator("#transcript img")).to_have_count(0)
    assert elsewhere == []
    load.click()
    expect(photo.locator("img.thumb")).to_be_visible()
    expect(photo.locator("img.thumb")).to_have_attribute("referrerpolicy", "no-referrer")
    photo.locator("img.thumb").evaluate("image => image.decode()")  # loaded (or throws)
    assert elsewhere == [("https://img.example.test/photo.png", None)]
    first.get_by_role("button").click()
    thumbnail = first.locator("img.thumb")
    expect(thumbnail).to_have_attribute("src", "https://example.com/cat.png")
    expect(thumbnail).to_have_attribute("referrerpolicy", "no-referrer")
    scripted = transcript_item(page, "javascript link")  # not a web address: text only
    expect(scripted.locator("a, img")).to_have_count(0)
    expect(scripted).to_contain_text("javascript:alert(1)")
    # An https address on a named host, quotes and all: a link and a thumbnail whose
    # address stays one attribute's value (the browser escapes it), never markup.
    breakout = transcript_item(page, "svg link")
    expect(breakout.locator("svg")).to_have_count(0)
    assert "svg" not in (breakout.locator("a.image-link").get_attribute("href") or "").split(
        "/")[2]
    address = transcript_item(page, "address link")
    expect(address.locator("a.image-link")).to_have_count(1)
    expect(address.locator("img")).to_have_count(0)  # a bare IP address gets no thumbnail
    expect(address.locator("button")).to_have_count(0)  # ...nor a button to load one
    assert page.locator("#transcript svg, #transcript img[src='x']").count() == 0
    # Every image has loaded or failed: an injected handler has had its chance (none may run).
    page.wait_for_function("() => [...document.images].every(image => image.complete)")
    assert [url for url, _ in elsewhere] == ["https://img.example.test/photo.png",
                                             "https://example.com/cat.png"]
    watched_page.screenshot("04-hostile-text")


def test_a_bad_or_revoked_token_goes_back_to_sign_in_with_a_message(cast, watched):
    server, token = cast["server"], cast["token"]
    page = watched().page
    page.goto(f"{server.url}/inbox#token=szagent_{'0' * 43}")
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#signin-error")).to_contain_text("not accepted")
    assert page.evaluate("Object.keys(sessionStorage).length") == 0
    odd = watched().page  # a token no header could carry: refused the same way
    odd.goto(f"{server.url}/inbox#token=%C3%A9t%C3%A9")
    expect(odd.locator("#signin-error")).to_contain_text("not accepted")
    odd.goto(f"{server.url}/inbox#token={token}")  # the link, in a tab already on the page
    expect(odd.locator("#app")).to_be_visible()
    assert "token" not in odd.url
    odd.locator("#signout").click()  # Sign out forgets the token
    expect(odd.locator("#signin")).to_be_visible()
    assert odd.evaluate("Object.keys(sessionStorage).length") == 0
    odd.close()

    # Pasting the right one works; revoking it sends the agent back to sign in.
    page.locator("#token-input").fill(token)
    page.locator("#token-input").press("Enter")
    expect(page.locator("#app")).to_be_visible()
    with cast["app"].app_context():
        assert accounts.remove_agent("ann")
    release_database()
    # (The next call the page makes is refused: at the latest, its waiting feed poll's.)
    expect(page.locator("#signin")).to_be_visible(timeout=40_000)
    expect(page.locator("#signin-error")).to_contain_text("revoked")

    assert page.evaluate("Object.keys(sessionStorage).length") == 0  # forgotten
    page.locator("#token-input").fill(token)  # the revoked token, pasted again
    page.locator("#token-input").press("Enter")
    expect(page.locator("#signin-error")).to_contain_text("not accepted")


def test_a_failed_reply_stays_and_its_retry_is_sent_once(cast, watched):
    server, customer, token = cast["server"], cast["customer"], cast["token"]
    chat_id = customer.create("Can you help?")
    page = watched().page
    sign_in_by_link(page, server, token)
    open_chat(page, chat_id)

    # The server stores the reply but its answer is lost on the way back.
    lost = []

    def lose_the_answer(route):
        if route.request.method == "POST" and not lost:
            lost.append(route.request.headers.get("idempotency-key"))
            route.fetch()  # the server stores the reply...
            route.abort("connectionreset")  # ...and the page never hears so
        else:
            route.continue_()

    page.route("**/api/agent/chats/*/messages", lose_the_answer)
    box = page.locator("#reply-input")
    box.fill("Sure, one moment")
    box.press("Enter")
    expect(page.locator("#reply-error")).to_be_visible()
    expect(box).to_have_value("Sure, one moment")
    assert lost and lost[0]
    page.locator("#retry-send").click()
    expect(box).to_have_value("")
    expect(page.locator("#reply-error")).to_be_hidden()
    wait_until(lambda: len(customer.seen(chat_id)) == 2, what="the reply")
    assert customer.seen(chat_id) == [(1, "user", "Can you help?"),
                                      (2, "agent", "Sure, one moment")]
    expect(transcript_item(page, "Sure, one moment", "msg-agent")).to_have_count(1)


def test_the_inbox_works_with_the_keyboard_alone(cast, watched):
    server, customer, token = cast["server"], cast["customer"], cast["token"]
    chat_id = customer.create("Keyboard question")
    page = watched().page
    page.goto(f"{server.url}/inbox")
    expect(page.locator("#signin")).to_be_visible()
    page.keyboard.press("Tab")
    for _ in range(10):  # the token field is a few stops in at most
        if page.evaluate("document.activeElement.id") == "token-input":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "token-input"
    page.keyboard.type(token)
    page.keyboard.press("Enter")
    expect(row(page, chat_id)).to_be_visible()

    # Tab through the page to the chat's row; Enter opens it; the reply box takes a reply.
    for _ in range(40):
        focused = page.evaluate(
            "document.activeElement.closest('li.chat-row')?.dataset.chatId || ''")
        if focused == chat_id:
            break
        page.keyboard.press("Tab")
    assert focused == chat_id
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # focus is visible
    page.keyboard.press("Enter")
    expect(page.locator("#chat")).to_be_visible()
    page.locator("#reply-input").focus()
    page.keyboard.type("Typed without a mouse")
    page.keyboard.press("Enter")
    wait_until(lambda: (2, "agent", "Typed without a mouse") in customer.seen(chat_id),
               what="the keyboard reply")
    labelled = page.evaluate("""() => [...document.querySelectorAll(
        '#app input, #app select, #app textarea, #app button')].filter(element =>
        element.offsetParent !== null && !(element.labels?.length ||
        element.getAttribute('aria-label') || element.getAttribute('aria-labelledby') ||
        element.textContent.trim())).map(element => element.id || element.outerHTML)""")
    assert labelled == []


def test_on_a_phone_the_list_and_the_chat_are_two_views(cast, watched):
    server, customer, token = cast["server"], cast["customer"], cast["token"]
    chat_id = customer.create("Writing from my phone")
    watched_page = watched(width=390, height=844)
    page = watched_page.page
    sign_in_by_link(page, server, token)
    expect(row(page, chat_id)).to_be_visible()
    expect(page.locator("#reply-input")).to_be_hidden()
    watched_page.screenshot("05-phone-list")
    open_chat(page, chat_id)
    expect(page.locator("#chat-list")).to_be_hidden()
    expect(transcript_item(page, "Writing from my phone")).to_be_visible()
    send_reply(page, "Answered from a phone")
    wait_until(lambda: (2, "agent", "Answered from a phone") in customer.seen(chat_id),
               what="the phone reply")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # nothing overflows sideways
    watched_page.screenshot("06-phone-chat")
    page.locator("#back-to-list").click()
    expect(row(page, chat_id)).to_be_visible()


# The browser's notification and audio, recorded instead of shown and played; and a switch
# for whether the tab is hidden (a headless tab never is).
RECORD_NOTICING = """
window.__hidden = false;
window.__notifications = [];
window.__tones = 0;
for (const [name, value] of [['hidden', () => window.__hidden],
                             ['visibilityState', () => window.__hidden ? 'hidden' : 'visible']])
  Object.defineProperty(Document.prototype, name, {get: value, configurable: true});
class RecordedNotification {
  constructor(title, options) { window.__notifications.push({title, body: options.body}); }
  addEventListener() {}
  close() {}
  static requestPermission() {
    RecordedNotification.permission = 'granted';
    return Promise.resolve('granted');
  }
}
RecordedNotification.permission = 'default';
window.Notification = RecordedNotification;
const silent = {connect: (next) => next, start() {}, stop() {}, frequency: {},
                gain: {setValueAtTime() {}, exponentialRampToValueAtTime() {}}};
window.AudioContext = class {
  constructor() { this.currentTime = 0; this.destination = {}; this.state = 'running'; }
  createOscillator() { window.__tones += 1; return silent; }
  createGain() { return silent; }
};
"""


def test_a_customer_writing_while_the_tab_is_hidden_is_noticed(cast, watched):
    server, customer, token = cast["server"], cast["customer"], cast["token"]
    chat_id = customer.create("First question")
    page = watched().page
    page.add_init_script(RECORD_NOTICING)
    sign_in_by_link(page, server, token)
    expect(page).to_have_title("(1) Inbox · SupportZen")  # the unread count
    page.locator("#notify-toggle").click()
    page.locator("#sound-toggle").check()
    open_chat(page, chat_id)
    expect(page).to_have_title("Inbox · SupportZen")  # read: nothing unread

    customer.send(chat_id, "Hello? <b>anyone</b>")  # while the tab is visible: no notice
    expect(transcript_item(page, "Hello? <b>anyone</b>")).to_be_visible()
    page.evaluate("window.__hidden = true")
    customer.send(chat_id, "I am still waiting")
    page.wait_for_function("() => window.__notifications.length > 0")
    assert page.evaluate("window.__notifications") == [
        {"title": "pat@example.com", "body": "I am still waiting"}]
    assert page.evaluate("window.__tones") == 1
    # Hidden, the chat is not read: the title counts the new message.
    expect(page).to_have_title("(1) Inbox · SupportZen")
    page.evaluate("window.__hidden = false; document.dispatchEvent(new Event('visibilitychange'))")
    expect(page).to_have_title("Inbox · SupportZen")


def test_an_empty_inbox_says_so(cast, watched):
    watched_page = watched()
    page = watched_page.page
    sign_in_by_link(page, cast["server"], cast["token"])
    expect(page.locator("#list-empty")).to_be_visible()
    watched_page.screenshot("00-empty")
