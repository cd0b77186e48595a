"""The agents' inbox page: one template and its script and style sheet, all served from here;
and the pages for a person who opens the service's address: the front page and the docs.

The inbox is a plain client of the agent API (api/agent.py): it holds no data of its own, and
the server renders nothing into it but the addresses of its files. Everything it shows
comes from the API at run time and is put into the page as text, never as markup.
"""
import os
import re

from flask import Blueprint, render_template, request, send_from_directory
from werkzeug.exceptions import NotFound

bp = Blueprint("inbox", __name__, template_folder="templates")

# Only this origin's own script, style sheet and API; images also from https (customers'
# attachments); no inline script or style, no plugins, no framing (no clickjacking), forms
# post nowhere else.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' https:; script-src 'self'; style-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # a link a customer sent learns nothing of the inbox
    "X-Frame-Options": "DENY",  # frame-ancestors, for browsers that predate it
    # No DNS look-up of a customer's link before the agent follows it (that too says when the
    # chat was read); their images load only on a click (inbox-transcript.js).
    "X-DNS-Prefetch-Control": "off",
}


DOCS_FOLDER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
# The documentation's own files, and nothing else of the folder: Markdown (shown as plain
# text, which any browser displays) and its pictures.
DOC_FILE = re.compile(r"\A[a-z0-9][a-z0-9-]*\.(md|png)\Z")
DOC_PAGES = [("configuration.md", "Configuration: every setting"),
             ("customer-api.md", "The customer API, which the client apps speak"),
             ("agent-api.md", "The agent API"),
             ("events-and-webhooks.md", "Events and webhooks"),
             ("inbox.md", "The inbox"),
             ("operations.md", "Running it: a VPS, nginx, systemd, logs, upgrades, backups"),
             ("architecture.md", "How it is built: the modules, and how an event travels")]


@bp.get("/inbox")
def inbox_page():
    return render_template("inbox.html"), {"Cache-Control": "no-store"}


@bp.get("/")
def front_page():
    """For a person who opens the service's address: what it is, and where to go."""
    return render_template("front.html", doc_pages=DOC_PAGES)


@bp.get("/docs/<name>")
def doc_file(name):
    if not DOC_FILE.match(name):
        raise NotFound()
    mimetype = "text/plain" if name.endswith(".md") else None
    return send_from_directory(DOCS_FOLDER, name, mimetype=mimetype)


PAGES = ("static", "inbox.inbox_page", "inbox.front_page", "inbox.doc_file")


def protect_page_and_files(app):
    """The pages and the app's static files (the inbox's script and style sheet) carry the
    headers; the API's JSON answers have their own (api/envelope.py)."""

    @app.after_request
    def protect(response):
        if request.endpoint in PAGES:
            response.headers.update(PAGE_HEADERS)
        return response
