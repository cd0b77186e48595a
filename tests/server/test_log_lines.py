"""A log line never carries raw control characters from a request: a path with %0A must not
forge a second line."""
import logging

import pytest

from chat import chats, workspace


@pytest.mark.parametrize("raw, escaped", [
    ("%0Aforged 200 OK", "\\nforged 200 OK"),
    ("%0D%0Aforged", "\\r\\nforged"),
    ("%1B%5B31mred", "\\x1b[31mred"),
    ("%E2%80%A8forged", "\\u2028forged"),
])
def test_an_unexpected_error_logs_the_path_on_one_line(agent, monkeypatch, caplog, raw,
                                                       escaped):
    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(chats, "chat_list", explode)
    with caplog.at_level(logging.ERROR):
        response = agent.get(f"/chats/chat-{raw}")
    assert response.status_code == 500
    [record] = [r for r in caplog.records if r.getMessage().startswith("unexpected error")]
    assert record.getMessage() == f"unexpected error on GET /api/agent/chats/chat-{escaped}"
    assert record.exc_info is not None  # the traceback stays, apart from the message


def test_flasks_own_exception_line_is_escaped_too(make_app, caplog):
    """An exception past every handler (here in an after_request hook) is logged by Flask
    itself, with the path in the message."""
    app = make_app()
    app.config["PROPAGATE_EXCEPTIONS"] = False  # answer it, as a server does

    @app.after_request
    def explode(response):
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR):
        response = app.test_client().get("/nowhere%0Aforged")
    assert response.status_code == 500
    assert response.json["error"] == {"code": "internal_error"}
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Exception")]
    assert line == "Exception on /nowhere\\nforged [GET]"


def test_an_unexpected_error_on_the_customer_panel_logs_no_email(agent, monkeypatch, caplog):
    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(workspace, "customer_with_chats", explode)
    with caplog.at_level(logging.ERROR):
        response = agent.get("/customers/pat.private%40example.com")
    assert response.status_code == 500
    assert "pat.private" not in caplog.text
    [record] = [r for r in caplog.records if r.getMessage().startswith("unexpected error")]
    assert record.getMessage() == "unexpected error on GET /api/agent/customers/<email>"


def test_flasks_own_exception_line_logs_no_email(make_app, caplog):
    app = make_app()
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.after_request
    def explode(response):
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR):
        response = app.test_client().get("/api/agent/customers/pat.private@example.com")
    assert response.status_code == 500
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Exception")]
    assert line == "Exception on /api/agent/customers/<email> [GET]"
    assert "pat.private" not in caplog.text
