"""The inbox page as served: its headers, and markup a strict Content-Security-Policy allows
(the browser tests in test_inbox_browser.py show it working)."""
import re
from html.parser import HTMLParser

import pytest

from app import create_app

PAGE_FILES = ["/inbox", "/static/inbox.js", "/static/inbox.css"]


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


@pytest.mark.parametrize("path", PAGE_FILES)
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
    assert fetch(client, "/static/inbox.js").mimetype == "text/javascript"
    assert fetch(client, "/static/inbox.css").mimetype == "text/css"
    assert fetch(client, "/static/nothing.js").status_code == 404


def test_the_markup_has_no_inline_code_and_loads_nothing_from_elsewhere(client):
    markup = parsed(fetch(client, "/inbox").get_data(as_text=True))
    assert markup.inline_code == []
    for tag, attributes in markup.tags:
        assert not any(name.startswith("on") for name in attributes), tag
        assert "style" not in attributes, tag
        for name in ("src", "href", "action"):
            value = attributes.get(name) or ""
            assert not re.match(r"(?i)\s*(https?:|//|javascript:|data:)", value), (tag, value)
    scripts = [attributes["src"] for tag, attributes in markup.tags if tag == "script"]
    assert scripts == ["/static/inbox.js"]


def test_the_script_never_writes_markup(client):
    """Customer text reaches the page only as text: the script builds elements and sets
    textContent, and never hands a string to the HTML parser or to eval."""
    script = fetch(client, "/static/inbox.js").get_data(as_text=True)
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
    assert fetch(client, "/static/inbox.js").status_code == 200
    assert fetch(client, "/api/agent/me").status_code == 503
