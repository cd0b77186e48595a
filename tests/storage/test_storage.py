"""SQLite settings: WAL, foreign keys, a busy timeout, the chosen synchronous level."""
import pytest

import models
from app import create_app


@pytest.mark.parametrize("setting,expected", [(None, 1), ("NORMAL", 1), ("FULL", 2)])
def test_sqlite_pragmas(tmp_path, make_app, setting, expected):
    config = {"DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}"}
    if setting:
        config["SQLITE_SYNCHRONOUS"] = setting
    app = make_app(**config)
    with app.app_context():
        def pragma(name):
            return models.database.execute_sql(f"PRAGMA {name}").fetchone()[0]

        assert pragma("journal_mode") == "wal"
        assert pragma("foreign_keys") == 1
        assert pragma("busy_timeout") >= 5000
        assert pragma("synchronous") == expected
    models.database.close()


def test_bad_synchronous_setting_is_refused(tmp_path):
    # create_app's own check, made before anything touches the database.
    with pytest.raises(ValueError, match="SQLITE_SYNCHRONOUS"):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}",
                    "SQLITE_SYNCHRONOUS": "OFF"})


def test_tables_are_created_at_start(tmp_path, make_app):
    app = make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'chat.db'}")
    with app.app_context():
        assert {"user", "chat", "message"} <= set(models.database.get_tables())
    models.database.close()
