"""The inbox page as served: its headers, and markup a strict Content-Security-Policy allows
(the browser tests in test_inbox_browser.py show it working); and the front page and the docs,
for a person who opens the service's address."""
import os
import re
from html.parser import HTMLParser

import pytest

from app import create_app
from support.helpers import ROOT, assert_error

# `import { a, b } from './inbox-x.js';` (the names may run over several lines)
IMPORT = re.compile(r"^import\s(?:[^;]*?\sfrom\s)?'\./([\w.-]+\.js)';", re.M)


def modules_from(entry):
    """The entry module and every module it imports, directly or not, as the browser finds them."""
    found, waiting = [], [entry]
    while waiting:
        name = waiting.pop(0)
        if name not in found:
            found.append(name)
            with open(os.path.join(ROOT, "inbox", "static", name), encoding="utf-8") as module:
                waiting.extend(IMPORT.findall(module.read()))
    return found


SCRIPTS = [f"/static/{name}" for name in modules_from("inbox.js")]  # the entry first
PAGE_FILES = ["/inbox", *SCRIPTS, "/static/inbox.css"]
FRONT_PAGES = ["/", "/docs/customer-api.md", "/docs/inbox.png"]


class Markup(HTMLParser):
    """Every tag with its attributes, and whether any script or style is written inline."""

    def __init__(self):
        super().__init__()
        self.tags = []
        self.inline_code = []
        self._open = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._open = tag

    def handle_endtag(self, tag):
        self._open = None

    def handle_data(self, data):
        if self._open in ("script", "style") and data.strip():
            self.inline_code.append(data)


def fetch(client, path):
    """The whole answer, its file closed (a static file is sent from an open file)."""
    response = client.get(path)
    response.get_data()
    response.close()
    return response


def parsed(html):
    markup = Markup()
    markup.feed(html)
    return markup


@pytest.mark.parametrize("path", PAGE_FILES + FRONT_PAGES)
def test_the_page_and_its_files_carry_a_strict_policy(client, path):
    response = fetch(client, path)
    assert response.status_code == 200
    policy = response.headers["Content-Security-Policy"]
    for directive in ("default-src 'self'", "img-src 'self' https:", "script-src 'self'",
                      "style-src 'self'", "frame-ancestors 'none'", "object-src 'none'"):
        assert directive in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-DNS-Prefetch-Control"] == "off"


def test_the_page_is_html_and_its_files_have_their_types(client):
    assert fetch(client, "/inbox").mimetype == "text/html"
    for path in SCRIPTS:  # (a module script served as any other type does not run)
        assert fetch(client, path).mimetype == "text/javascript", path
    assert fetch(client, "/static/inbox.css").mimetype == "text/css"
    assert fetch(client, "/static/nothing.js").status_code == 404


def assert_no_inline_code_and_nothing_from_elsewhere(markup):
    assert markup.inline_code == []
    for tag, attributes in markup.tags:
        assert not any(name.startswith("on") for name in attributes), tag
        assert "style" not in attributes, tag
        for name in ("src", "href", "action"):
            value = attributes.get(name) or ""
            assert not re.match(r"(?i)\s*(https?:|//|javascript:|data:)", value), (tag, value)


def test_the_markup_has_no_inline_code_and_loads_nothing_from_elsewhere(client):
    markup = parsed(fetch(client, "/inbox").get_data(as_text=True))
    assert_no_inline_code_and_nothing_from_elsewhere(markup)
    scripts = [attributes["src"] for tag, attributes in markup.tags if tag == "script"]
    assert scripts == ["/static/inbox.js"]
    types = [attributes.get("type") for tag, attributes in markup.tags if tag == "script"]
    assert types == ["module"]  # (only a module may import the others)


def test_the_page_preloads_every_module_its_script_imports(client):
    """Every script in static/ is one of the entry's modules (so the tests here check them
    all), and the page names each of them for the browser to fetch at once."""
    folder = os.path.join(ROOT, "inbox", "static")
    on_disk = [name for name in os.listdir(folder) if name.endswith(".js")]
    assert sorted(f"/static/{name}" for name in on_disk) == sorted(SCRIPTS)
    markup = parsed(fetch(client, "/inbox").get_data(as_text=True))
    preloaded = [attributes["href"] for tag, attributes in markup.tags
                 if tag == "link" and attributes.get("rel") == "modulepreload"]
    assert sorted(preloaded) == sorted(SCRIPTS[1:])


@pytest.mark.parametrize("path", SCRIPTS)
def test_the_script_never_writes_markup(client, path):
    """Customer text reaches the page only as text: the script builds elements and sets
    textContent, and never hands a string to the HTML parser or to eval."""
    script = fetch(client, path).get_data(as_text=True)
    for writes_markup in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                          "eval(", "new Function", "setAttribute('style'",
                          'setAttribute("style"'):
        assert writes_markup not in script


def test_the_page_loads_while_the_database_cannot():
    """The page comes up, and then tells the agent that the server cannot answer, rather
    than the browser showing an error of its own."""
    nothing_listens = "postgresql://postgres@127.0.0.1:9/none"  # (the discard port)
    app = create_app({"TESTING": True, "DATABASE_URL": nothing_listens})
    client = app.test_client()
    assert fetch(client, "/inbox").status_code == 200
    for path in SCRIPTS:
        assert fetch(client, path).status_code == 200, path
    for path in ("/", "/docs/customer-api.md"):  # the pages for people need none either
        assert fetch(client, path).status_code == 200, path
    assert fetch(client, "/api/agent/me").status_code == 503


# --- the front page and the docs ----------------------------------------------------------

def test_the_front_page_says_what_this_is_and_links_to_the_inbox_the_api_and_the_docs(client):
    response = fetch(client, "/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert "SupportZen live chat" in html
    markup = parsed(html)
    assert_no_inline_code_and_nothing_from_elsewhere(markup)
    assert not any(tag == "script" for tag, _ in markup.tags)
    links = [attributes["href"] for tag, attributes in markup.tags if tag == "a"]
    assert "/inbox" in links and "/api/openapi.json" in links
    documented = sorted(name for name in os.listdir(os.path.join(ROOT, "docs"))
                        if name.endswith(".md"))
    assert sorted(link.removeprefix("/docs/") for link in links
                  if link.startswith("/docs/")) == documented
    for link in links:
        assert fetch(client, link).status_code == 200, link


def test_the_docs_are_served_as_they_are_in_the_repository(client):
    response = fetch(client, "/docs/customer-api.md")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.mimetype_params["charset"] == "utf-8"
    with open(os.path.join(ROOT, "docs", "customer-api.md"), "rb") as document:
        assert response.get_data() == document.read()
    assert fetch(client, "/docs/inbox.png").mimetype == "image/png"


@pytest.mark.parametrize("path", ["/docs/nothing.md", "/docs/.hidden.md", "/docs/app.py",
                                  "/docs/..%2Fapp.py", "/docs/", "/docs"])
def test_nothing_else_is_served_as_docs(client, path):
    assert_error(fetch(client, path), 404, "not_found")


@pytest.mark.parametrize("method", ["post", "put", "delete", "patch"])
def test_other_methods_on_the_front_page_answer_json(client, method):
    response = getattr(client, method)("/")
    assert_error(response, 405, "method_not_allowed")
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
