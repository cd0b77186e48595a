"""Every hand-written SQL statement, each returning rows with names.

The hot paths (every send, poll, list and sign-in) run these instead of peewee's query builder,
which costs several times what running the statement does. Each `Statement` declares the names
of the columns it answers; its rows are named tuples built from them (attribute access such as
`row.updated_at`, at about the cost of a plain tuple: see bench/rows.py). The first time a
statement runs, its names are checked against what the database really answered, so a column
added to the SQL and not to the names fails at once instead of shifting every field after it.

peewee's query builder stays for cold paths (provisioning, migrations, idempotency keys).
"""
import functools
from collections import namedtuple
from typing import NamedTuple

from models import database, is_sqlite

PREVIEW_LENGTH = 200


class Statement:
    """One SQL statement, written with ? placeholders (each backend gets its own copy, and the
    driver's statement cache reuses the prepared form)."""

    def __init__(self, sql, columns=None, name="Row"):
        self.sql = sql
        self.columns = tuple(columns.split()) if isinstance(columns, str) else columns
        self.row_type = namedtuple(name, self.columns) if self.columns else None
        # The named tuple from the driver's tuple, without `_make`'s classmethod call.
        self._row = functools.partial(tuple.__new__, self.row_type) if self.columns else None
        self._by_placeholder = {}
        self._checked = set()

    def execute(self, *params):
        """Run the statement; the raw cursor (for statements that answer no rows)."""
        placeholder = database.obj.param
        sql = self._by_placeholder.get(placeholder)
        if sql is None:
            sql = self._by_placeholder[placeholder] = self.sql.replace("?", placeholder)
        cursor = database.execute_sql(sql, params)
        if placeholder not in self._checked and cursor.description is not None:
            self._check_columns(cursor.description)
            self._checked.add(placeholder)
        return cursor

    def one(self, *params):
        """The first row, or None."""
        self._require_columns()
        row = self.execute(*params).fetchone()
        return None if row is None else self._row(row)

    def all(self, *params):
        self._require_columns()
        return list(map(self._row, self.execute(*params).fetchall()))

    def value(self, *params):
        """The first column of the first row, or None: for counts and single values."""
        row = self.execute(*params).fetchone()
        return None if row is None else row[0]

    # The same on a connection of the driver's own, outside peewee's pool (SQLite's change
    # watcher has one): rows with names there too.

    def all_on(self, connection, *params):
        self._require_columns()
        return list(map(self._row, connection.execute(self.sql, params).fetchall()))

    def value_on(self, connection, *params):
        row = connection.execute(self.sql, params).fetchone()
        return None if row is None else row[0]

    def _require_columns(self):
        if self._row is None:
            raise TypeError(f"rows need the statement's column names: {self.sql}")

    def _check_columns(self, description):
        answered = tuple(column[0] for column in description)
        if self.columns is not None and answered != self.columns:
            raise AssertionError(f"statement answers {answered}, declared {self.columns}: "
                                 f"{self.sql}")


# --- users and agents --------------------------------------------------------------------

FIND_ACTIVE_USER = Statement(
    'SELECT "id", "email", "uuid", "name" FROM "user" WHERE "email" = ? AND "uuid" IS NOT NULL',
    "id email uuid name", "ActiveUser")

FIND_AGENT = Statement(
    'SELECT "id", "name", "display_name", "token_digest" FROM "agent" WHERE "token_digest" = ?',
    "id name display_name token_digest", "ActiveAgent")

LOCK_USER = Statement('SELECT "id" FROM "user" WHERE "id" = ? FOR UPDATE', "id")


def lock_user(user_id):
    """Inside a write transaction: hold the user's row until it ends (SQLite's IMMEDIATE
    transaction already excludes every other writer)."""
    if not is_sqlite():
        LOCK_USER.execute(user_id)


SAVED_REPLIES_LOCK = 727275  # (migrations take 727274)
_LOCK_SAVED_REPLIES = Statement("SELECT pg_advisory_xact_lock(?)")


def lock_saved_replies():
    """Inside a write transaction: keep other saves of saved replies out until it ends."""
    if not is_sqlite():
        _LOCK_SAVED_REPLIES.execute(SAVED_REPLIES_LOCK)


# --- chats and messages ------------------------------------------------------------------

CHAT_COLUMNS = "id public_id user_id status last_seq customer_read_seq agent_read_seq"
FIND_CHAT = Statement(
    'SELECT "id", "public_id", "user_id", "status", "last_seq", "customer_read_seq", '
    '"agent_read_seq" FROM "chat" WHERE "public_id" = ?', CHAT_COLUMNS, "ChatRow")
FIND_OWN_CHAT = Statement(FIND_CHAT.sql + ' AND "user_id" = ?', CHAT_COLUMNS, "ChatRow")
CHAT_STATUS = Statement('SELECT "status" FROM "chat" WHERE "id" = ?', "status")
LAST_SEQ = Statement('SELECT "last_seq" FROM "chat" WHERE "id" = ?', "last_seq")
COUNT_OPEN_CHATS = Statement(
    'SELECT COUNT(*) AS "count" FROM "chat" WHERE "user_id" = ? AND "status" = ?', "count")

INSERT_CHAT = Statement(
    'INSERT INTO "chat" ("public_id", "user_id", "status", "name", "plan_id", '
    '"account_created_at", "last_seq", "customer_read_seq", "agent_read_seq", "created_at", '
    '"updated_at", "waiting_since") VALUES (?, ?, ?, ?, ?, ?, 1, 0, 0, ?, ?, ?) RETURNING "id"',
    "id")
INSERT_MESSAGE = Statement(
    'INSERT INTO "message" ("public_id", "chat_id", "seq", "sender", "agent_id", "body", '
    '"image_url", "created_at") VALUES (?, ?, ?, ?, ?, ?, ?, ?)')

# The UPDATE that bumps `last_seq` is the lock: SQLite's IMMEDIATE transaction holds the write
# lock, PostgreSQL holds the chat row until commit, so concurrent senders into one chat take
# turns, each gets its own seq, and they commit in seq order (a reader never sees seq 6 before
# seq 5). The same statement checks the status (so nothing slips into a chat closed a moment
# before) and, for customers, the owner.
# (It also answers what the message's event tells of the chat.) An agent's reply ends the
# customer's wait; a customer's message starts one, unless they were waiting already.
BUMPED = ' RETURNING "id", "last_seq", "public_id", "name", "plan_id", "user_id"'
BUMP_CHAT = Statement(
    'UPDATE "chat" SET "last_seq" = "last_seq" + 1, "updated_at" = ?, "waiting_since" = NULL '
    'WHERE "id" = ? AND "status" = ?' + BUMPED, "id last_seq public_id name plan_id user_id",
    "Bumped")
BUMP_OWN_CHAT = Statement(
    'UPDATE "chat" SET "last_seq" = "last_seq" + 1, "updated_at" = ?, '
    '"waiting_since" = COALESCE("waiting_since", ?) '
    'WHERE "public_id" = ? AND "user_id" = ? AND "status" = ?' + BUMPED,
    "id last_seq public_id name plan_id user_id", "Bumped")
# A note's number and place: bumping `last_note` holds the chat's row (PostgreSQL) until
# commit, as BUMP_CHAT does for messages, so a chat's notes commit in number order and a
# reader that follows the numbers never skips one; `last_seq` is then the newest message
# committed before it.
NEXT_NOTE = Statement(
    'UPDATE "chat" SET "last_note" = "last_note" + 1 WHERE "id" = ? '
    'RETURNING "last_note", "last_seq"', "last_note last_seq", "NextNote")
CUSTOMER_OF = Statement('SELECT "email", "name" FROM "user" WHERE "id" = ?', "email name",
                        "Customer")
SET_STATUS = Statement(
    'UPDATE "chat" SET "status" = ?, "updated_at" = ? WHERE "id" = ? AND "status" <> ?')

# Changes other processes made (storage/changes.py). Every change a waiting poll cares about (a
# message, a close, a reopen) stamps the chat's updated_at; PostgreSQL sends notifications instead.
NOTIFY = Statement("SELECT pg_notify(?, ?)")
NEWEST_CHAT_CHANGE = Statement('SELECT MAX("updated_at") FROM "chat"')
CHATS_CHANGED_SINCE = Statement(
    'SELECT "id", "updated_at" FROM "chat" WHERE "updated_at" > ? ORDER BY "updated_at"',
    "id updated_at", "ChangedChat")

MESSAGES_AFTER = Statement(
    'SELECT m."public_id", m."seq", m."sender", m."body", m."image_url", m."created_at", '
    'm."agent_id", a."name" AS "agent_name", a."display_name" AS "agent_display_name" '
    'FROM "message" AS m LEFT JOIN "agent" AS a ON a."id" = m."agent_id" '
    'WHERE m."chat_id" = ? AND m."seq" > ? ORDER BY m."seq" LIMIT ?',
    "public_id seq sender body image_url created_at agent_id agent_name agent_display_name",
    "MessageRow")


# --- the event log (events/__init__.py) -------------------------------------------------------

# Taking the next id is the lock: the counter's row (PostgreSQL) or the IMMEDIATE transaction
# (SQLite) is held until commit, so event writers commit in id order and a rollback gives its
# id back. Events are recorded as late in their transactions as they can be, so the row is
# held for little more than the commit (and PostgreSQL's NOTIFY serializes commits anyway).
NEXT_EVENT_ID = Statement(
    'UPDATE "event_counter" SET "last_id" = "last_id" + 1 WHERE "id" = 1 RETURNING "last_id"',
    "last_id")
NEWEST_EVENT_ID = Statement('SELECT "last_id" FROM "event_counter" WHERE "id" = 1', "last_id")
INSERT_EVENT = Statement(
    'INSERT INTO "event" ("id", "type", "chat_id", "created_at", "body") VALUES (?, ?, ?, ?, ?)')
EVENTS_AFTER = Statement(
    'SELECT "id", "body" FROM "event" WHERE "id" > ? ORDER BY "id" LIMIT ?', "id body",
    "EventRow")
EVENT_CHAT = Statement(
    'SELECT c."public_id", c."status", c."name", c."plan_id", u."email", u."name" AS '
    '"customer_name" FROM "chat" AS c JOIN "user" AS u ON u."id" = c."user_id" '
    'WHERE c."id" = ?', "public_id status name plan_id email customer_name", "EventChat")
# Purging: the oldest events by id (ids follow commits, and so, but for a clock stepped back,
# their times), up to the first one still waiting to be delivered somewhere.
OLDEST_EVENTS = Statement(
    'SELECT "id", "created_at" FROM "event" WHERE "id" > ? ORDER BY "id" LIMIT ?',
    "id created_at", "OldEvent")
OLDEST_UNDELIVERED_EVENT = Statement(
    'SELECT MIN("event_id") FROM "webhook_delivery" WHERE "endpoint_id" = ? AND "state" = ?')
DELETE_EVENTS_THROUGH = Statement('DELETE FROM "event" WHERE "id" <= ?')
DELETE_DELIVERIES_THROUGH = Statement(
    'DELETE FROM "webhook_delivery" WHERE "event_id" <= ? AND "state" <> ?')


# --- read marks, one statement set per side's mark ----------------------------------------

class ReadMarkStatements:
    """The statements on one side's read mark (`customer_read_seq` or `agent_read_seq`), which
    counts the other side's messages as unread."""

    def __init__(self, mark_column):
        self.advance = Statement(
            f'UPDATE "chat" SET "{mark_column}" = ? WHERE "id" = ? AND "{mark_column}" < ?')
        self.current = Statement(f'SELECT "{mark_column}" AS "mark" FROM "chat" WHERE "id" = ?',
                                 "mark")
        self.unread = Statement(
            'SELECT COUNT(*) AS "unread" FROM "message" AS m JOIN "chat" AS c '
            'ON c."id" = m."chat_id" '
            f'WHERE m."chat_id" = ? AND m."sender" = ? AND m."seq" > c."{mark_column}"',
            "unread")


READ_MARKS = {column: ReadMarkStatements(column)
              for column in ("customer_read_seq", "agent_read_seq")}


# --- chat lists ---------------------------------------------------------------------------

CHAT_LIST_COLUMNS = (
    "id public_id status name plan_id account_created_at created_at updated_at last_seq "
    "customer_read_seq agent_read_seq customer_email customer_name last_message_seq "
    "last_message_sender last_message_preview last_message_created_at unread "
    "assignee_name assignee_display_name waiting_since")
_chat_lists = {}
# Whose chats a list holds: anyone's, nobody's, or one agent's (its id a parameter).
ANY_ASSIGNEE, NO_ASSIGNEE, ONE_ASSIGNEE = "any", "none", "one"
# How a list is ordered, and the cursor condition that goes on after a row: the most recent
# activity first, or the longest-waiting first (only chats whose customer waits).
# The cursor names its last row by public id (chats.encode_cursor), looked up here.
_CURSOR_ROW = '(SELECT p."id" FROM "chat" AS p WHERE p."public_id" = ?)'
LIST_ORDERS = {
    "recent": ('c."updated_at" DESC, c."id" DESC',
               f'(c."updated_at" < ? OR (c."updated_at" = ? AND c."id" < {_CURSOR_ROW}))'),
    "waiting": ('c."waiting_since", c."id"',
                f'(c."waiting_since" > ? OR (c."waiting_since" = ? AND c."id" > {_CURSOR_ROW}))'),
}


class ListFilter(NamedTuple):
    """Which chats a list holds, besides its side's read mark."""
    by_status: bool = False
    by_user: bool = False
    by_public_id: bool = False
    assignee: str = ANY_ASSIGNEE
    order: str = "recent"
    before: bool = False


def chat_list_statement(read_mark, list_filter):
    """The list query for one combination of filters, built once. Each chat comes with its
    customer, its assignee, its newest message (found through (chat_id, seq)) and its unread
    count for the side whose read mark is `read_mark`.

    Parameters, in order: the sender counted as unread, then [status], [user id],
    [public id], [assignee id], [stamp, stamp, public id] of the cursor, and the row limit.
    """
    key = (read_mark, list_filter)
    if key not in _chat_lists:
        assert read_mark in READ_MARKS
        order_by, after_cursor = LIST_ORDERS[list_filter.order]
        where = ["1 = 1"]
        where += ['c."status" = ?'] if list_filter.by_status else []
        where += ['c."user_id" = ?'] if list_filter.by_user else []
        where += ['c."public_id" = ?'] if list_filter.by_public_id else []
        where += {ANY_ASSIGNEE: [], NO_ASSIGNEE: ['c."assignee_id" IS NULL'],
                  ONE_ASSIGNEE: ['c."assignee_id" = ?']}[list_filter.assignee]
        where += ['c."waiting_since" IS NOT NULL'] if list_filter.order == "waiting" else []
        where += [after_cursor] if list_filter.before else []
        _chat_lists[key] = Statement(
            'SELECT c."id", c."public_id", c."status", c."name", c."plan_id", '
            'c."account_created_at", c."created_at", c."updated_at", c."last_seq", '
            'c."customer_read_seq", c."agent_read_seq", u."email" AS "customer_email", '
            'u."name" AS "customer_name", m."seq" AS "last_message_seq", '
            'm."sender" AS "last_message_sender", '
            f'substr(m."body", 1, {PREVIEW_LENGTH}) AS "last_message_preview", '
            'm."created_at" AS "last_message_created_at", '
            '(SELECT COUNT(*) FROM "message" AS x '
            f'WHERE x."chat_id" = c."id" AND x."sender" = ? AND x."seq" > c."{read_mark}") '
            'AS "unread", g."name" AS "assignee_name", '
            'g."display_name" AS "assignee_display_name", c."waiting_since" '
            'FROM "chat" AS c JOIN "user" AS u ON u."id" = c."user_id" '
            'JOIN "message" AS m ON m."chat_id" = c."id" AND m."seq" = c."last_seq" '
            'LEFT JOIN "agent" AS g ON g."id" = c."assignee_id" '
            f'WHERE {" AND ".join(where)} ORDER BY {order_by} LIMIT ?',
            CHAT_LIST_COLUMNS, "ChatListRow")
    return _chat_lists[key]


# The open chats the agents have: all, one agent's and nobody's, each with its unread
# messages (the customer's, after the agents' read mark).
_UNREAD = ('(SELECT COUNT(*) FROM "message" AS x WHERE x."chat_id" = c."id" '
           'AND x."sender" = ? AND x."seq" > c."agent_read_seq")')
# (MATERIALIZED: SQLite would otherwise count each chat's unread messages once per SUM.)
CHAT_COUNTS = Statement(
    'WITH t AS MATERIALIZED ('
    f'SELECT c."assignee_id", {_UNREAD} AS "unread" FROM "chat" AS c WHERE c."status" = ?) '
    'SELECT COUNT(*) AS "all_chats", '
    'COUNT(CASE WHEN t."assignee_id" = ? THEN 1 END) AS "mine", '
    'COUNT(CASE WHEN t."assignee_id" IS NULL THEN 1 END) AS "unassigned", '
    'COALESCE(SUM(t."unread"), 0) AS "all_unread", '
    'COALESCE(SUM(CASE WHEN t."assignee_id" = ? THEN t."unread" END), 0) AS "mine_unread", '
    'COALESCE(SUM(CASE WHEN t."assignee_id" IS NULL THEN t."unread" END), 0) '
    'AS "unassigned_unread" FROM t',
    "all_chats mine unassigned all_unread mine_unread unassigned_unread", "ChatCounts")


def explain(statement, params):
    """The database's plan for `statement` (for the benchmark's report), as text lines."""
    prefix = "EXPLAIN QUERY PLAN " if is_sqlite() else "EXPLAIN "
    plan = Statement(prefix + statement.sql)
    return [" | ".join(str(part) for part in row) for row in plan.execute(*params).fetchall()]
