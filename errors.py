"""The response envelope and every error handler.

Every answer, success or failure, is `{"status", "message", "data", "error"}`. Views raise
`APIError` (or let a model exception, a `ValidationError` or an `HTTPException` escape) and
the handlers below turn it into that envelope with a stable `error.code`, so no view needs a
try/except of its own.
"""
import json

from flask import current_app, g, request
from marshmallow import ValidationError
from peewee import IntegrityError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

import chats
from models import IdempotencyKeyReused


def envelope(message, data=None, status=200, headers=None):
    """Build a success answer in the envelope."""
    return json_response({"status": "success", "message": message, "data": data, "error": None},
                         status, headers)


def json_response(body, status, headers=None):
    """What `jsonify` answers outside debug mode, built directly: every request pays for it."""
    text = json.dumps(body, separators=(",", ":"), default=current_app.json.default)
    return current_app.response_class(text + "\n", status=status, headers=headers,
                                      mimetype="application/json")


class APIError(Exception):
    """An error answer: HTTP status, stable machine-readable code, human message."""

    def __init__(self, status, code, message, headers=None, **details):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details

    def to_response(self):
        error = {"code": self.code, **self.details}
        return json_response({"status": "error", "message": self.message, "data": None,
                              "error": error}, self.status, self.headers)


def unauthorized():
    """The one 401 for every authentication failure, so no cause can be told from another."""
    return APIError(401, "unauthorized", "Authentication failed.",
                    headers={"WWW-Authenticate": "Bearer"})


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


# Domain exceptions raised by models.py, mapped once to their HTTP answer.
MODEL_ERRORS = {
    chats.ChatNotFound: (404, "chat_not_found", "Chat not found."),
    chats.ChatClosed: (409, "chat_closed", "This chat is closed."),
    chats.TooManyOpenChats: (409, "too_many_open_chats",
                             "Too many open chats; close one before starting another."),
    IdempotencyKeyReused: (422, "idempotency_key_reused",
                           "This Idempotency-Key was already used with a different request."),
}

HTTP_ERRORS = {
    400: ("bad_request", "The request could not be understood."),
    404: ("not_found", "There is nothing at this URL."),
    405: ("method_not_allowed", "This URL does not accept that method."),
    413: ("payload_too_large", "The request body is too large."),
    415: ("unsupported_media_type", "The request body must be JSON."),
    431: ("headers_too_large", "The request headers are too large."),
}


def handle_api_error(error):
    return error.to_response()


def handle_validation_error(error):
    fields = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
    return APIError(400, "validation_error", "Some fields are invalid.",
                    fields=fields).to_response()


def handle_model_error(error):
    status, code, message = MODEL_ERRORS[type(error)]
    return APIError(status, code, message).to_response()


def handle_http_exception(error):
    code, message = HTTP_ERRORS.get(error.code, ("http_error", error.name))
    headers = {}
    if error.code == 405 and getattr(error, "valid_methods", None):
        headers["Allow"] = ", ".join(error.valid_methods)
    return APIError(error.code, code, message, headers=headers).to_response()


def handle_integrity_error(error):
    current_app.logger.warning("integrity error: %s", error)
    return APIError(409, "conflict",
                    "The request conflicts with data already stored.").to_response()


def handle_database_unavailable(error):
    current_app.logger.error("database unavailable: %s", error)
    return APIError(503, "database_unavailable",
                    "The database is unavailable; try again shortly.",
                    headers={"Retry-After": "1"}).to_response()


def handle_unexpected(error):
    current_app.logger.exception("unexpected error on %s %s", request.method, request.path)
    return APIError(500, "internal_error", "An unexpected error occurred.").to_response()


def register_error_handlers(app):
    app.register_error_handler(APIError, handle_api_error)
    app.register_error_handler(ValidationError, handle_validation_error)
    for exception in MODEL_ERRORS:
        app.register_error_handler(exception, handle_model_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(IntegrityError, handle_integrity_error)
    app.register_error_handler(OperationalError, handle_database_unavailable)
    app.register_error_handler(InterfaceError, handle_database_unavailable)
    app.register_error_handler(Exception, handle_unexpected)
