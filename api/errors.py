"""Every exception an answer can come from, mapped once to its JSON envelope.

Views raise `APIError`, or let a domain exception (a chat rule broken, a failed sign-in), a
`ValidationError` or an `HTTPException` escape; the handlers below turn each into the envelope
with a stable `error.code`, so no view needs a try/except of its own. Flask's own answers (its
error pages, its automatic OPTIONS answer) are envelopes too.
"""
import logging
import re

from flask import current_app, request
from flask_limiter import RateLimitExceeded
from marshmallow import ValidationError
from peewee import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    NotSupportedError,
    ProgrammingError,
)
from werkzeug.exceptions import HTTPException

import auth
import events
from api import idempotency, ratelimits
from api.envelope import APIError, failure, invalid_fields, options_answer
from chat import accounts, chats, workspace
from schemas import INVISIBLE_CHARACTERS
from storage import trouble as dbtrouble

# Domain exceptions, each with the answer it gets: (status, code, message[, headers]).
DOMAIN_ERRORS = {
    chats.ChatNotFound: (404, "chat_not_found", "Chat not found."),
    chats.ChatClosed: (409, "chat_closed", "This chat is closed."),
    chats.TooManyOpenChats: (409, "too_many_open_chats",
                             "Too many open chats; close one before starting another."),
    idempotency.IdempotencyKeyReused: (
        422, "idempotency_key_reused",
        "This Idempotency-Key was already used with a different request."),
    accounts.UserNotFound: (404, "user_not_found", "No active user has that email."),
    events.CursorExpired: (410, "cursor_expired",
                           "Events after this cursor are no longer kept: reload, then follow "
                           "the events from the newest on (omit `after`)."),
    workspace.CustomerNotFound: (404, "customer_not_found", "No customer has that email."),
    workspace.SavedReplyNotFound: (404, "reply_not_found", "No saved reply has that shortcut."),
    workspace.TooManySavedReplies: (409, "too_many_replies",
                                    f"There are {workspace.MAX_SAVED_REPLIES} saved replies "
                                    "already; delete one first."),
    # One 401 for every authentication failure, so no cause can be told from another.
    auth.AuthenticationFailed: (401, "unauthorized", "Authentication failed.",
                                {"WWW-Authenticate": "Bearer"}),
}

# Domain exceptions that are invalid input in one field: (field, its message).
FIELD_ERRORS = {
    chats.SeqBeyondLast: lambda error: ("seq", str(error)),
    chats.InvalidCursor: lambda error: ("before", "Not a valid cursor."),
    workspace.UnknownAgent: lambda error: ("agent", "No active agent has that name."),
    workspace.UnknownAssignee: lambda error: (
        "assignee", "No agent has that name; or use me, none or any."),
    workspace.InvalidShortcut: lambda error: (
        "shortcut", "Must be 1 to 32 letters, digits, - or _."),
}

HTTP_ERRORS = {
    400: ("bad_request", "The request could not be understood."),
    404: ("not_found", "There is nothing at this URL."),
    405: ("method_not_allowed", "This URL does not accept that method."),
    413: ("payload_too_large", "The request body is too large."),
    415: ("unsupported_media_type", "The request body must be JSON."),
    431: ("headers_too_large", "The request headers are too large."),
    500: ("internal_error", "An unexpected error occurred."),
}

# Database errors that are a statement's fault (a bug), not a database that cannot be used.
STATEMENT_ERRORS = (ProgrammingError, DataError, NotSupportedError)

# Characters that would end or disguise a log line: C0 and C1 controls (newlines, escape
# sequences), DEL, and the invisible ones (schemas.invisible_characters): the Unicode line
# separators, and the format characters that reorder or hide text (direction marks,
# overrides and isolates, zero-width characters, tags).
CONTROL_CHARACTERS = re.compile(f"[\x00-\x1f\x7f-\x9f{INVISIBLE_CHARACTERS}]")


# A path that names a customer by email (the agents' customer panel) is logged without it:
# the logs are no place for customers' addresses.
CUSTOMER_PATH = "/api/agent/customers/"
PATHS_WITH_EMAILS = re.compile(r"(/api/agent/customers/).+", re.DOTALL)
# The same path inside a message (Flask's "Exception on <path> [GET]"): up to a space.
PATHS_WITH_EMAILS_IN_TEXT = re.compile(r"(/api/agent/customers/)\S+")


# Any other path segment that holds an "@" (a mistyped route, a doubled slash): taken for an
# email too.
SEGMENTS_WITH_AT = re.compile(r"[^/]*@[^/]*")


def logged_path(path):
    return SEGMENTS_WITH_AT.sub("<email>", PATHS_WITH_EMAILS.sub(r"\1<email>", path))


def printable(text):
    """`text` safe to log: every control character escaped (a path with %0A forges no line)."""
    return CONTROL_CHARACTERS.sub(
        lambda match: match.group().encode("unicode_escape").decode("ascii"), str(text))


class OneLinePerRecord(logging.Filter):
    """Escapes control characters in every message the app logs, those Flask logs itself
    (its "Exception on <path>" line) included, and takes customers' emails out of the paths
    it names. A traceback, kept apart, stays multi-line."""

    def filter(self, record):
        try:
            message = record.getMessage()
        except Exception:  # a bad format: logging reports it itself, later
            return True
        if CUSTOMER_PATH in message:
            message = PATHS_WITH_EMAILS_IN_TEXT.sub(r"\1<email>", message)
            record.msg, record.args = message, ()
        if CONTROL_CHARACTERS.search(message):
            record.msg, record.args = printable(message), ()
        return True


ONE_LINE_PER_RECORD = OneLinePerRecord()


def handle_api_error(error):
    return failure(error)


def handle_domain_error(error):
    return failure(APIError(*DOMAIN_ERRORS[type(error)]))


def handle_field_error(error):
    field, message = FIELD_ERRORS[type(error)](error)
    return failure(invalid_fields({field: [message]}))


def handle_validation_error(error):
    fields = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
    return failure(invalid_fields(fields))


def handle_http_exception(error):
    code, message = HTTP_ERRORS.get(error.code, ("http_error", error.name))
    headers = {}
    if error.code == 405 and getattr(error, "valid_methods", None):
        headers["Allow"] = ", ".join(error.valid_methods)
    return failure(APIError(error.code, code, message, headers=headers))


def handle_rate_limited(error):
    return failure(APIError(429, "rate_limited",
                            "Too many requests; retry after Retry-After seconds.",
                            headers={"Retry-After": str(ratelimits.seconds_until_reset())}))


def handle_integrity_error(error):
    current_app.logger.warning("integrity error: %s", printable(error))
    return failure(APIError(409, "conflict", "The request conflicts with data already stored."))


def handle_database_unavailable(error):
    """Unreachable, read-only, full or corrupt: 503, and the cause logged once a minute (a
    full disk fails every request)."""
    if not isinstance(error, dbtrouble.WritesFailing):  # that one was logged when it happened
        dbtrouble.database_trouble.failed(error, current_app.logger)
    return failure(APIError(503, "database_unavailable",
                            "The database is unavailable; try again shortly.",
                            headers={"Retry-After": "1"}))


def handle_unexpected(error):
    current_app.logger.exception("unexpected error on %s %s", printable(request.method),
                                 printable(logged_path(request.path)))
    return failure(APIError(500, "internal_error", "An unexpected error occurred."))


def register_error_handlers(app):
    app.register_error_handler(APIError, handle_api_error)
    app.register_error_handler(ValidationError, handle_validation_error)
    for exception in DOMAIN_ERRORS:
        app.register_error_handler(exception, handle_domain_error)
    for exception in FIELD_ERRORS:
        app.register_error_handler(exception, handle_field_error)
    app.register_error_handler(RateLimitExceeded, handle_rate_limited)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(IntegrityError, handle_integrity_error)
    # Unreachable (OperationalError, InterfaceError), read-only, full (OperationalError),
    # corrupt ("database disk image is malformed": DatabaseError itself).
    app.register_error_handler(DatabaseError, handle_database_unavailable)
    app.register_error_handler(InterfaceError, handle_database_unavailable)
    for exception in STATEMENT_ERRORS:
        app.register_error_handler(exception, handle_unexpected)
    app.register_error_handler(Exception, handle_unexpected)
    # Flask answers OPTIONS itself, without a view: an envelope like every other answer.
    app.make_default_options_response = options_answer
    app.logger.addFilter(ONE_LINE_PER_RECORD)
