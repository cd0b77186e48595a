"""The agents' inbox page: one template and its script and style sheet, all served from here.

The page is a plain client of the agent API (agent_api.py): it holds no data of its own, and
the server renders nothing into it but the addresses of its two files. Everything it shows
comes from the API at run time and is put into the page as text, never as markup.
"""
from flask import Blueprint, render_template, request

bp = Blueprint("inbox", __name__)

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
    # chat was read); their images load only on a click (inbox.js).
    "X-DNS-Prefetch-Control": "off",
}


@bp.get("/inbox")
def inbox_page():
    return render_template("inbox.html"), {"Cache-Control": "no-store"}


def protect_page_and_files(app):
    """The page and the app's static files (its script and style sheet) carry the headers;
    the API's JSON answers have their own (envelope.py)."""

    @app.after_request
    def protect(response):
        if request.endpoint in ("static", "inbox.inbox_page"):
            response.headers.update(PAGE_HEADERS)
        return response
