"""flask users add / import / remove / list."""
import json

import pytest

from chat import accounts
from support.helpers import Customer

UUID = "123e4567-e89b-12d3-a456-426614174000"
UUID2 = "00000000-0000-4000-8000-000000000002"


def active_emails(app):
    with app.app_context():
        return {user.email: (user.uuid, user.name) for user in accounts.active_users()}


def test_add_then_update(runner, app):
    result = runner.invoke(args=["users", "add", "Ada@Example.com", UUID, "--name", "Ada"])
    assert result.exit_code == 0, result.output
    assert "added ada@example.com" in result.output
    result = runner.invoke(args=["users", "add", "ADA@example.com", UUID2])
    assert result.exit_code == 0
    assert "updated ada@example.com" in result.output
    assert active_emails(app) == {"ada@example.com": (UUID2, "Ada")}
    assert UUID not in result.output and UUID2 not in result.output


def test_add_rejects_bad_input(runner, app):
    for args in (["bad-email", UUID], ["a@example.com", "not-a-uuid"],
                 ["a@example.com", UUID + "0"], ["a@example.com", UUID, "--name", "n" * 201]):
        result = runner.invoke(args=["users", "add", *args])
        assert result.exit_code != 0
        assert "Error" in result.output
    assert active_emails(app) == {}


def test_added_user_can_chat(runner, make_customer, client):
    runner.invoke(args=["users", "add", "cli@example.com", UUID])
    customer = Customer(email="cli@example.com", uuid=UUID, client=client)
    assert customer.create()


def test_remove_and_list(runner, app):
    runner.invoke(args=["users", "add", "a@example.com", UUID, "--name", "Ann"])
    runner.invoke(args=["users", "add", "b@example.com", UUID2])
    listed = runner.invoke(args=["users", "list"])
    assert listed.exit_code == 0
    assert "a@example.com\tAnn" in listed.output and "b@example.com" in listed.output
    assert UUID not in listed.output

    assert runner.invoke(args=["users", "remove", "A@example.com"]).exit_code == 0
    assert "a@example.com" not in runner.invoke(args=["users", "list"]).output
    missing = runner.invoke(args=["users", "remove", "a@example.com"])
    assert missing.exit_code == 1 and "no active user" in missing.output


def test_import_csv_reports_each_row(runner, app, tmp_path):
    path = tmp_path / "users.csv"
    path.write_text("\n".join([
        "email,uuid,name",
        f"one@example.com,{UUID},One",
        f"two@example.com,{UUID2},",
        "bad-email,00000000-0000-4000-8000-000000000003,Bad",
        "three@example.com,not-a-uuid,Three",
        f"ONE@example.com,{UUID2},One again",
        f"four@example.com,{UUID},Four,extra",
        "\x00@example.com,00000000-0000-4000-8000-000000000004,",
    ]) + "\n")
    result = runner.invoke(args=["users", "import", str(path)])
    assert result.exit_code == 1
    assert "added 2, updated 1, rejected 4" in result.output
    assert "line 4: rejected: email: Not a valid email address." in result.output
    assert "line 5: rejected: uuid:" in result.output
    assert "line 7: rejected: too many columns" in result.output
    assert "line 8: rejected: email:" in result.output
    assert active_emails(app) == {"one@example.com": (UUID2, "One again"),
                                  "two@example.com": (UUID2, None)}
    assert UUID not in result.output


def test_import_json_lines(runner, app, tmp_path):
    path = tmp_path / "users.jsonl"
    path.write_text("\n".join([
        json.dumps({"email": "j@example.com", "uuid": UUID, "name": "J"}),
        "{not json",
        json.dumps(["a list"]),
        "",
        json.dumps({"email": "k@example.com", "uuid": UUID2, "role": "admin"}),
        json.dumps({"email": "l@example.com", "uuid": UUID2}),
    ]))
    result = runner.invoke(args=["users", "import", str(path)])
    assert "added 2, updated 0, rejected 3" in result.output
    assert "line 2: rejected: not valid JSON" in result.output
    assert "line 3: rejected: not a JSON object" in result.output
    assert "line 5: rejected: role: Unknown field." in result.output
    assert set(active_emails(app)) == {"j@example.com", "l@example.com"}


@pytest.mark.slow
def test_import_large_file_shows_progress(runner, app, tmp_path):
    path = tmp_path / "many.csv"
    rows = [f"user{n}@example.com,00000000-0000-4000-8000-{n:012d}" for n in range(2500)]
    path.write_text("email,uuid\n" + "\n".join(rows) + "\n")
    result = runner.invoke(args=["users", "import", str(path)])
    assert result.exit_code == 0, result.output
    assert "Importing users" in result.output
    assert "added 2500, updated 0, rejected 0" in result.output
    assert len(active_emails(app)) == 2500


def test_import_rejects_wrong_header(runner, tmp_path):
    path = tmp_path / "users.csv"
    path.write_text("mail,id\nx@example.com,1\n")
    result = runner.invoke(args=["users", "import", str(path)])
    assert result.exit_code != 0
    assert "header must be email,uuid" in result.output
