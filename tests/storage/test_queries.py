"""storage/queries.py: hand-written statements answer named rows, and a statement whose declared
names no longer match what the database answers fails at once instead of shifting fields."""
import pytest

from storage import queries


def test_rows_have_names(app, customer, agent):
    chat_id = customer.create("first")
    agent.reply(chat_id, "second")
    with app.app_context():
        chat = queries.FIND_CHAT.one(chat_id)
        assert (chat.public_id, chat.last_seq, chat.status) == (chat_id, 2, "open")
        by_id = queries.ListFilter(by_public_id=True)
        [row] = queries.chat_list_statement("agent_read_seq", by_id).all("user", chat_id, 2)
        assert row.customer_email == customer.email
        assert (row.last_message_seq, row.last_message_preview, row.unread) == (2, "second", 1)
        assert [m.body for m in queries.MESSAGES_AFTER.all(chat.id, 0, 10)] == ["first",
                                                                                "second"]


def test_a_column_added_without_its_name_fails_at_once(app):
    drifted = queries.Statement('SELECT "id", "email", "name" FROM "user"', "id email")
    with app.app_context(), pytest.raises(AssertionError, match="declared"):
        drifted.all()


def test_a_missing_row_is_none(app):
    with app.app_context():
        assert queries.FIND_CHAT.one("chat-nothing") is None
        assert queries.LAST_SEQ.value(-1) is None
