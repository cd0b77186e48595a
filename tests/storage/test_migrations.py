"""Upgrading a database made by an earlier version keeps every chat and message usable."""
import datetime

import pytest

import models
from storage import migrations
from support.helpers import Customer, new_agent
from support.legacy_schema import UUID, build_version_1


@pytest.mark.parametrize("record_version", [False, True], ids=["unversioned", "version-1"])
def test_upgrade_keeps_chats_and_messages_usable(database_url, record_version, caplog,
                                                 make_app):
    build_version_1(database_url, record_version)

    app = make_app()
    assert f"schema upgraded from version 1 to {migrations.LATEST}" in caplog.text
    client = app.test_client()
    customer = Customer("old@example.com", UUID, client)
    agent = new_agent(app, "upgrader", "Up", client)

    chat_id = "chat-legacy-00000000000000002"
    polled = customer.poll(chat_id).json["data"]
    assert [m["message"] for m in polled["messages"]] == ["chat 2 message 1", "chat 2 message 2"]
    assert polled["messages"][0]["messageId"] == "msg-legacy-2-0000000000001"

    listed = customer.list().json["data"]["chats"]
    assert [c["chatId"] for c in listed] == [f"chat-legacy-{n:017d}" for n in (2, 1, 0)]
    assert all(c["unread"] == 0 for c in listed)

    agent_list = agent.get("/chats").json["data"]["chats"]
    assert len(agent_list) == 3 and agent_list[0]["unread"] == 2
    assert agent_list[0]["customer"] == {"email": "old@example.com", "name": "Old"}

    # Their customers spoke last: all three wait, since their first message.
    waiting = agent.get("/chats", sort="waiting").json["data"]["chats"]
    assert [c["waiting_since"] for c in waiting] == ["2026-01-02T03:04:05.000Z"] * 3
    assert all(c["assignee"] is None for c in waiting)

    assert customer.send(chat_id, "after the upgrade").json["data"]["chatId"] == chat_id
    assert agent.reply(chat_id, "welcome back").json["data"]["seq"] == 4
    assert len(agent.get("/chats", sort="waiting").json["data"]["chats"]) == 2
    assert [m["seq"] for m in customer.poll(chat_id, after=2).json["data"]["messages"]] == [3, 4]

    with app.app_context():
        assert models.Message.select().count() == 8
        assert migrations.current_version() == migrations.LATEST


def test_upgrade_finds_which_customers_wait_and_since_when(database_url, make_app):
    """A chat waits since the customer's first message after the agents' last one; a chat
    whose newest message is an agent's does not wait."""
    build_version_1(database_url, record_version=True)
    models.configure_database(database_url)
    migrations.upgrade(target=5)
    later = datetime.datetime(2026, 1, 2, 4, 0, 0)
    with models.database.atomic():  # chat 0: answered; chat 1: answered, then asked again
        for number, seq, sender, minutes in ((0, 3, "agent", 1), (1, 3, "agent", 1),
                                             (1, 4, "user", 2), (1, 5, "user", 3)):
            chat = models.Chat.select(models.Chat.id).where(  # (version 5's columns only)
                models.Chat.public_id == f"chat-legacy-{number:017d}").get()
            models.Message.insert(public_id=f"msg-later-{number}-{seq}", chat=chat.id,
                                  seq=seq, sender=sender, body="later",
                                  created_at=later + datetime.timedelta(minutes=minutes)
                                  ).execute()
            models.Chat.update(last_seq=seq).where(models.Chat.id == chat.id).execute()
    models.database.close_all()

    agent = new_agent(make_app(), "upgrader")
    waiting = agent.get("/chats", sort="waiting").json["data"]["chats"]
    assert [(chat["chatId"], chat["waiting_since"]) for chat in waiting] == [
        ("chat-legacy-00000000000000002", "2026-01-02T03:04:05.000Z"),
        ("chat-legacy-00000000000000001", "2026-01-02T04:02:00.000Z")]


def index_names():
    return {name for table in models.database.get_tables()
            for name in (index.name for index in models.database.get_indexes(table))}


def test_upgraded_and_fresh_databases_have_the_same_indexes(tmp_path, make_app):
    """Later migrations may name indexes: they must be named alike however the database
    was made (the first release made its tables from the models of the time)."""
    build_version_1(f"sqlite:///{tmp_path / 'old.db'}", record_version=False)
    make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'old.db'}")
    upgraded = index_names()
    make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'new.db'}")
    assert index_names() == upgraded
    assert {"message_chat_id_seq", "user_email", "chat_public_id",
            "idempotency_key_scope_key", "agent_token_digest"} <= upgraded
    # Version 3 dropped the indexes that others lead with the same column.
    assert not {"message_chat_id", "chat_user_id"} & upgraded


def test_fresh_database_gets_the_latest_version(app):
    with app.app_context():
        assert migrations.current_version() == migrations.LATEST
        assert {"agent", "idempotency_key", "schema_version"} <= set(
            models.database.get_tables())
