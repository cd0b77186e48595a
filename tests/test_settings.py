"""Every setting is checked at start: a bad value stops every launcher with one line naming it,
exit status 2 and no traceback, instead of a service that answers 500 to every request."""
import os
import subprocess
import sys

import pytest

import settings
from app import create_app
from support.helpers import ROOT, expect_one_line, free_port

# (setting, a bad value, words the one line must hold)
BAD_VALUES = [
    ("RATELIMIT_AUTH_FAILURES", "garbage", "not a rate limit"),
    ("RATELIMIT_CUSTOMER_SENDS", "60 per fortnight", "not a rate limit"),
    ("RATELIMIT_CUSTOMER_POLLS", "0 per minute", "refuses every request"),
    ("RATELIMIT_AGENT_CALLS", "", None),  # empty is unset: only through config (below)
    ("RATELIMIT_STORAGE_URI", "bogus://127.0.0.1", "not a storage URI"),
    ("RATELIMIT_STORAGE_URI", "memcached://127.0.0.1:11211", "pymemcache"),
    ("RATELIMIT_ENABLED", "maybe", "not one of"),
    ("ACCESS_LOG", "sometimes", "not one of"),
    ("SQLITE_SYNCHRONOUS", "OFF", "NORMAL, FULL"),
    ("DB_POOL_SIZE", "thirty-two", "not a whole number"),
    ("DB_POOL_SIZE", "0", "at least 1"),
    ("MAX_CONTENT_LENGTH", "64k", "not a whole number"),
    ("MAX_HEADER_BYTES", "100", "at least 1024"),
    ("MAX_POLL_PAGE_BYTES", "1023", "at least 1024"),
    ("MAX_OPEN_CHATS", "1.5", "not a whole number"),
    ("LONGPOLL_MAX_WAITERS", "-1", "at least 0"),
    ("LONGPOLL_MAX_WAITERS_PER_CUSTOMER", "two", "not a whole number"),
    ("IDEMPOTENCY_KEY_HOURS", "nan", "not a number"),
    ("IDEMPOTENCY_KEY_HOURS", "0", "more than 0"),
    ("IDEMPOTENCY_KEY_HOURS", "1e12", "at most"),
    ("ADMIN_TOKEN", "too-short-a-token", "at least 32 characters"),
    ("ADMIN_TOKEN", "a token with spaces in it, long enough", "printable ASCII"),
    ("CORS_ORIGINS", "app.example.com", "not an origin"),
    ("CORS_ORIGINS", "https://app.example.com/", "not an origin"),
    ("DATABASE_URL", "mysql://root:hunter2@127.0.0.1/chat", "not sqlite, postgres"),
    ("DATABASE_URL", "postgresql://127.0.0.1:port/chat", "port"),
    ("DATABASE_URL", "sqlite://", "file path"),
    # Numbers are plain ASCII: int() and float() also read other scripts' digits, fullwidth
    # ones and underscores.
    ("DB_POOL_SIZE", "\u0661\u0662", "not a whole number"),  # Arabic-Indic 12
    ("MAX_POLL_PAGE_BYTES", "+\u0663\u0660\u0660\u0660", "not a whole number"),
    ("MAX_OPEN_CHATS", "\uff11\uff10", "not a whole number"),  # fullwidth 10
    ("MAX_OPEN_CHATS", "1_0", "not a whole number"),
    ("IDEMPOTENCY_KEY_HOURS", "\u0661\u0662", "not a number"),
    ("IDEMPOTENCY_KEY_HOURS", "1_0", "not a number"),
    ("IDEMPOTENCY_KEY_HOURS", "1e-320", "at least"),  # a denormal: keys kept for no time
    ("IDEMPOTENCY_KEY_HOURS", "0.0002", "at least"),  # under a second
    ("RATELIMIT_AUTH_FAILURES", "1 per 0 minute", "window of 0"),  # limits reads "1 per minute"
    ("RATELIMIT_AGENT_CALLS", "600 per minute; 5 per 00 second", "window of 0"),
    ("RATELIMIT_CUSTOMER_SENDS", "\u0661 per minute", "not a rate limit"),
    ("RATELIMIT_STORAGE_URI", "redis://:x", "needs a host"),
    ("RATELIMIT_STORAGE_URI", "redis://127.0.0.1:x", "port"),
    ("RATELIMIT_STORAGE_URI", "redis://h:99999", "port"),
    ("RATELIMIT_STORAGE_URI", "redis://", "needs a host"),
    ("RATELIMIT_STORAGE_URI", "redis+sentinel://", "needs a host"),
    ("RATELIMIT_STORAGE_URI", "redis+sentinel://127.0.0.1:26379", "service_name"),
    ("RATELIMIT_STORAGE_URI", "redis+sentinel://127.0.0.1:26379,:1/mymaster", "needs a host"),
    ("DATABASE_URL", "sqlite:////tmp/x.db?foo=bar", "no parameters"),
    ("DATABASE_URL", "sqlite:////tmp/x.db#part", "no parameters"),
]
BAD_ENVIRONMENT = [case for case in BAD_VALUES if case[1] != ""]


def case_id(case):
    return f"{case[0]}={case[1]!r}"


@pytest.mark.parametrize("case", BAD_ENVIRONMENT, ids=case_id)
def test_a_bad_environment_value_stops_with_one_line_and_status_2(monkeypatch, capsys, case):
    name, value, words = case
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        create_app({"TESTING": True})
    assert stopped.value.code == 2
    expect_one_line(capsys.readouterr().err, name, words)


@pytest.mark.parametrize("case", BAD_VALUES, ids=case_id)
def test_a_bad_config_value_is_a_value_error_naming_the_setting(tmp_path, case):
    name, value, _ = case
    with pytest.raises(settings.SettingError, match=f"^setting {name}: ") as refused:
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}", name: value})
    assert isinstance(refused.value, ValueError) and refused.value.name == name


@pytest.mark.parametrize("name, value", [
    ("DB_POOL_SIZE", True), ("MAX_OPEN_CHATS", None), ("RATELIMIT_ENABLED", "2"),
    ("CORS_ORIGINS", ["https://app.example.com"]), ("IDEMPOTENCY_KEY_HOURS", float("inf")),
    ("ADMIN_TOKEN", 12345678901234567890123456789012345),
])
def test_config_values_of_the_wrong_type_are_refused(name, value):
    with pytest.raises(settings.SettingError, match=name):
        settings.load({name: value})


@pytest.mark.parametrize("name, text, expected", [
    ("RATELIMIT_ENABLED", "Off", False), ("RATELIMIT_ENABLED", " yes ", True),
    ("ACCESS_LOG", "0", False), ("ACCESS_LOG", "TRUE", True),
    ("SQLITE_SYNCHRONOUS", "full", "FULL"),
    ("DB_POOL_SIZE", " 4 ", 4), ("LONGPOLL_MAX_WAITERS", "0", 0),
    ("IDEMPOTENCY_KEY_HOURS", "0.5", 0.5),
    ("RATELIMIT_AUTH_FAILURES", "20/minute; 500 per day", "20/minute; 500 per day"),
    ("RATELIMIT_STORAGE_URI", "redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("CORS_ORIGINS", "https://app.example.com, http://localhost:3000",
     "https://app.example.com, http://localhost:3000"),
    ("ADMIN_TOKEN", "x" * 32, "x" * 32),
    ("DATABASE_URL", "postgresql:///chat", "postgresql:///chat"),  # the local socket
    ("DATABASE_URL", "postgresql://chat@db:5432/chat?sslmode=require",
     "postgresql://chat@db:5432/chat?sslmode=require"),  # PostgreSQL keeps its parameters
    ("MAX_POLL_PAGE_BYTES", "+3000", 3000),
    ("IDEMPOTENCY_KEY_HOURS", "1e3", 1000.0), ("IDEMPOTENCY_KEY_HOURS", "0.0003", 0.0003),
    ("RATELIMIT_AUTH_FAILURES", "5 per 2 minutes", "5 per 2 minutes"),
    ("RATELIMIT_STORAGE_URI", "redis+sentinel://127.0.0.1:26379,127.0.0.2:26379/mymaster",
     "redis+sentinel://127.0.0.1:26379,127.0.0.2:26379/mymaster"),
    ("RATELIMIT_STORAGE_URI", "redis+unix:///run/redis.sock", "redis+unix:///run/redis.sock"),
])
def test_good_environment_values_are_read(monkeypatch, name, text, expected):
    monkeypatch.setenv(name, text)
    assert settings.load()[name] == expected


def test_defaults_pass_their_own_rules(monkeypatch):
    for name in settings.SETTINGS:
        monkeypatch.delenv(name, raising=False)
    assert settings.load() == settings.DEFAULTS


def test_config_overrides_the_environment_without_reading_it(monkeypatch):
    monkeypatch.setenv("RATELIMIT_AUTH_FAILURES", "garbage")
    assert settings.load({"RATELIMIT_AUTH_FAILURES": "5 per minute"})[
        "RATELIMIT_AUTH_FAILURES"] == "5 per minute"


def test_an_empty_environment_value_is_unset(monkeypatch):
    monkeypatch.setenv("ADMIN_TOKEN", "")
    monkeypatch.setenv("DB_POOL_SIZE", "")
    loaded = settings.load()
    assert loaded["ADMIN_TOKEN"] is None and loaded["DB_POOL_SIZE"] == 32


@pytest.mark.parametrize("text", ["\u0661\u0668\u0663\u0660\u0669", "\uff18\uff10",
                                  "8_080", "80.0", "0x50"])
def test_the_server_s_integers_are_ascii_too(capsys, text):
    """server/serve.py reads PORT (and its other numbers) by settings.integer: the same rule."""
    from server import serve

    with pytest.raises(SystemExit) as stopped:
        serve.read({"PORT": text}, "PORT", 8080, settings.integer(0, 65535))
    assert stopped.value.code == 2
    expect_one_line(capsys.readouterr().err, "PORT", "not a whole number")
    assert serve.read({"PORT": "18309"}, "PORT", 8080, settings.integer(0, 65535)) == 18309


def test_a_store_that_cannot_be_made_at_start_is_refused_in_one_line(monkeypatch, capsys,
                                                                      tmp_path):
    """What settings.py cannot see (a cluster that cannot be reached is found when the store is
    made) stops the start as a bad setting does, without a traceback."""
    monkeypatch.setenv("RATELIMIT_STORAGE_URI", "redis+cluster://127.0.0.1:1")
    with pytest.raises(SystemExit) as stopped:
        create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}"})
    assert stopped.value.code == 2
    expect_one_line(capsys.readouterr().err, "RATELIMIT_STORAGE_URI", "cannot be used")


def test_a_store_error_never_shows_the_password(monkeypatch, capsys):
    monkeypatch.setenv("RATELIMIT_STORAGE_URI", "redis+sentinel://:hunter2@127.0.0.1:26379")
    with pytest.raises(SystemExit):
        create_app({"TESTING": True})
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: setting RATELIMIT_STORAGE_URI: ") and "hunter2" not in stderr


@pytest.mark.parametrize("name, value, secret", [
    ("ADMIN_TOKEN", "hunter2-is-my-admin-token", "hunter2"),
    ("DATABASE_URL", "mysql://root:hunter2@127.0.0.1/chat", "hunter2"),
    ("RATELIMIT_AUTH_FAILURES", "20 per minute\nerror: setting FORGED: line", None),
])
def test_the_line_never_shows_a_secret_nor_breaks_in_two(monkeypatch, capsys, name, value,
                                                         secret):
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit):
        create_app({"TESTING": True})
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and stderr.startswith(f"error: setting {name}: ")
    assert secret is None or secret not in stderr


# --- every launcher, as an operator runs it ------------------------------------------------

LAUNCHERS = {
    "python app.py": ["app.py"],
    "waitress-serve": ["-m", "waitress", "--host=127.0.0.1", "--port={port}", "--call",
                       "app:create_app"],
    "flask run": ["-m", "flask", "--app", "app", "run", "--port={port}"],
    "flask users list": ["-m", "flask", "--app", "app", "users", "list"],
}


# The four kinds the issue names, through every launcher; every bad value through the one
# production runs (the rules themselves are checked in-process above).
ISSUE_CASES = [("DB_POOL_SIZE", "thirty-two", "not a whole number"),
               ("SQLITE_SYNCHRONOUS", "OFF", "NORMAL, FULL"),
               ("RATELIMIT_AUTH_FAILURES", "garbage", "not a rate limit"),
               ("ADMIN_TOKEN", "too-short-a-token", "at least 32 characters")]


def launch(tmp_path, launcher, name, value):
    port = free_port()
    environment = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}",
                   "HOST": "127.0.0.1", "PORT": str(port), name: value}
    command = [sys.executable, *(part.format(port=port) for part in LAUNCHERS[launcher])]
    # A launcher that accepted the value would serve until the timeout and fail the test.
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=60)


def expect_refused(tmp_path, done, name, words):
    assert done.returncode == 2, done.stderr
    expect_one_line(done.stderr, name, words)
    assert not os.path.exists(tmp_path / "chat.db")  # stopped before touching the database


@pytest.mark.slow
@pytest.mark.parametrize("launcher", list(LAUNCHERS))
@pytest.mark.parametrize("case", ISSUE_CASES, ids=case_id)
def test_every_launcher_refuses_a_bad_setting(tmp_path, launcher, case):
    name, value, words = case
    expect_refused(tmp_path, launch(tmp_path, launcher, name, value), name, words)


@pytest.mark.slow
@pytest.mark.parametrize("case", [case for case in BAD_ENVIRONMENT if case not in ISSUE_CASES],
                         ids=case_id)
def test_python_app_py_refuses_every_bad_setting(tmp_path, case):
    name, value, words = case
    expect_refused(tmp_path, launch(tmp_path, "python app.py", name, value), name, words)
