"""The SQLite database and its -wal and -shm files are readable by the service's user only:
they hold the uuids that sign requests."""
import contextlib
import logging
import os
import stat

from app import create_app


@contextlib.contextmanager
def permissive_umask():
    """umask 0: whatever mode a file gets is the service's own doing."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_database_and_its_wal_and_shm_are_private(tmp_path, make_app):
    folder = tmp_path / "data"
    with permissive_umask():
        client = make_app(DATABASE_URL=f"sqlite:///{folder / 'chat.db'}").test_client()
        assert client.get("/healthz").status_code == 200
    for name in ("chat.db", "chat.db-wal", "chat.db-shm"):
        assert mode(folder / name) == 0o600, name
    assert mode(folder) == 0o700  # the folder the service made


def test_db_upgrade_makes_the_new_file_private(tmp_path):
    path = tmp_path / "chat.db"
    app = create_app({"DATABASE_URL": f"sqlite:///{path}"})
    with permissive_umask():
        result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert mode(path) == 0o600


def test_an_existing_file_keeps_its_mode(tmp_path, make_app):
    """The operator's choice for a file that exists (a group that reads backups, say)."""
    path = tmp_path / "chat.db"
    path.touch(mode=0o640)
    os.chmod(path, 0o640)
    make_app(DATABASE_URL=f"sqlite:///{path}")
    assert mode(path) == 0o640



def test_an_existing_file_open_to_others_is_warned_about_once(tmp_path, make_app, caplog):
    path = tmp_path / "chat.db"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING):
        client = make_app(DATABASE_URL=f"sqlite:///{path}").test_client()
        assert client.get("/healthz").status_code == 200
    warnings = [record.getMessage() for record in caplog.records
                if record.levelno == logging.WARNING and "chmod 600" in record.getMessage()]
    assert len(warnings) == 1
    assert f"SQLite file {path} has mode 0644" in warnings[0]
    assert mode(path) == 0o644  # the operator's file is not changed behind their back


def test_a_private_file_is_not_warned_about(tmp_path, make_app, caplog):
    with caplog.at_level(logging.WARNING):
        make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'chat.db'}")
    assert not [record for record in caplog.records if "chmod 600" in record.getMessage()]
