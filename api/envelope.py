"""The HTTP envelope: reading a request's `data` object, and building every answer.

Every answer, success or failure, is `{"status", "message", "data", "error"}`. Views return
`success(...)` (or, under `@idempotent`, the `data` it wraps); failures are raised (an
`APIError`, or a domain exception that `api/errors.py` maps to one) and become `failure(...)`.
"""
import json

from flask import current_app, g, request
from flask.globals import request_ctx


class APIError(Exception):
    """An error answer: HTTP status, stable machine-readable code, human message, and any
    details to put beside the code (such as the invalid `fields`)."""

    def __init__(self, status, code, message, headers=None, **details):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details


# On every answer: a browser never guesses another type for it, and no cache keeps it (the
# answers hold private messages).
EVERY_ANSWER_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def json_response(body, status=200, headers=None):
    """What `jsonify` answers outside debug mode, built directly: every request pays for it.

    UTF-8, not \\u escapes: an emoji is 4 bytes, not 12. A lone surrogate (which JSON input
    can carry in a \\u escape, and a validation error can echo) cannot be UTF-8: it goes
    back out as the same \\u escape, still valid JSON.
    """
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False,
                      default=current_app.json.default)
    response = current_app.response_class((text + "\n").encode("utf-8", "backslashreplace"),
                                          status=status, headers=headers,
                                          mimetype="application/json")
    response.headers.update(EVERY_ANSWER_HEADERS)
    return response


def success(message, data=None, headers=None):
    return json_response({"status": "success", "message": message, "data": data,
                          "error": None}, 200, headers)


def failure(error):
    """The envelope of an `APIError`."""
    return json_response({"status": "error", "message": error.message, "data": None,
                          "error": {"code": error.code, **error.details}},
                         error.status, error.headers)


def options_answer():
    """Flask's automatic answer to OPTIONS, as an envelope: the methods the URL takes, in
    `Allow` and in `data.methods` (a CORS preflight gets its headers on top of it)."""
    methods = sorted(request_ctx.url_adapter.allowed_methods())
    return success("Allowed methods.", {"methods": methods},
                   headers={"Allow": ", ".join(methods)})


def read_data():
    """The request's `data` object, after checking the body is a JSON object holding one.

    Authentication needs `data.email` before the fields are validated, so the envelope is
    unwrapped here, once per request, rather than inside each schema.
    """
    if "envelope_data" in g:
        return g.envelope_data
    if not request.is_json:
        raise APIError(415, "unsupported_media_type",
                       "The request body must be JSON (Content-Type: application/json).")
    try:
        body = json.loads(request.get_data(cache=True))
    except (ValueError, RecursionError):
        raise APIError(400, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise APIError(400, "invalid_json",
                       'The request body must be a JSON object with a "data" object.')
    g.envelope_data = body["data"]
    return g.envelope_data


def invalid_fields(fields):
    """The 400 for input that breaks a rule: `fields` maps each field to its messages."""
    return APIError(400, "validation_error", "Some fields are invalid.", fields=fields)
