"""The service as it runs in production: waitress in its own process, /healthz."""
import shutil
import subprocess
import sys

import pytest
import requests

from support.helpers import ROOT, assert_error, release_database, running_server, sign

UUID = "123e4567-e89b-12d3-a456-426614174000"


def test_healthz_touches_the_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "success", "message": "ok",
                             "data": {"database": "ok", "rate_limits": "ok",
                                      "long_polls": {"waiting": 0, "capacity": 1000,
                                                     "woken": response.json["data"][
                                                         "long_polls"]["woken"]}},
                             "error": None}


def test_healthz_is_503_when_the_database_is_unreachable(tmp_path, make_app):
    folder = tmp_path / "data"
    folder.mkdir()
    client = make_app(DATABASE_URL=f"sqlite:///{folder / 'chat.db'}").test_client()
    assert client.get("/healthz").status_code == 200

    shutil.rmtree(folder)  # the disk holding the database is gone
    release_database()
    response = client.get("/healthz")
    assert_error(response, 503, "database_unavailable")
    assert response.headers["Retry-After"] == "1"


@pytest.mark.slow
def test_python_app_py_serves_the_spec_example(tmp_path):
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    with running_server(tmp_path, url) as server:
        log = server.log()
        assert f"database: SQLite file {tmp_path / 'chat.db'}" in log
        assert ".venv/bin/flask --app app users add EMAIL UUID" in log

        added = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "users", "add",
                                "user@example.com", UUID], cwd=ROOT, capture_output=True,
                               text=True, env={"DATABASE_URL": url, "PATH": ""})
        assert added.returncode == 0, added.stderr

        token = sign("user@example.com", UUID)
        response = requests.post(f"{server.url}/api/client/live/create", timeout=30, json={
            "data": {"email": "user@example.com", "name": "Premium Plan", "plan_id": 5,
                     "created_at": 1679223400, "message": "Hi, I have a quick question!"}},
            headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        chat_id = response.json()["data"]["chatId"]
        response = requests.post(f"{server.url}/api/client/live/chat", timeout=30, json={
            "data": {"chat_id": chat_id, "email": "user@example.com",
                     "message": "Where can I find my subscription URL?"}},
            headers={"Authorization": f"Bearer {token}"})
        assert response.json()["message"] == "Message sent successfully."
        log = server.log()
    # The log really holds what the server said, and never the uuid.
    assert f"Serving on {server.url}" in log and "database: SQLite file" in log
    assert UUID not in log


@pytest.mark.slow
def test_waitress_serve_call_works(tmp_path):
    command = [sys.executable, "-m", "waitress", "--host=127.0.0.1", "--port={port}",
               "--call", "app:create_app"]
    with running_server(tmp_path, f"sqlite:///{tmp_path / 'chat.db'}", command) as server:
        response = requests.get(f"{server.url}/nowhere", timeout=30)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
