"""The webhook deliveries' hand-written SQL (events/webhooks.py), apart from
`storage/queries.py` to keep each module short: the same `Statement`s, each returning rows with
names."""
from models import is_sqlite
from storage.queries import Statement

ADD_ENDPOINT = Statement(
    'INSERT INTO "webhook_endpoint" ("url", "fanned_out_through", "created_at") '
    'VALUES (?, (SELECT "last_id" FROM "event_counter" WHERE "id" = 1), ?) '
    'ON CONFLICT ("url") DO NOTHING')
FIND_ENDPOINT = Statement(
    'SELECT "id", "url", "fanned_out_through" FROM "webhook_endpoint" WHERE "url" = ?',
    "id url fanned_out_through", "Endpoint")
ALL_ENDPOINTS = Statement(
    'SELECT "id", "url", "fanned_out_through" FROM "webhook_endpoint" ORDER BY "id"',
    "id url fanned_out_through", "Endpoint")
ENDPOINT_PROGRESS = Statement(
    'SELECT "fanned_out_through" FROM "webhook_endpoint" WHERE "id" = ?', "fanned_out_through")
_LOCK_ENDPOINT = Statement(
    'SELECT "fanned_out_through" FROM "webhook_endpoint" WHERE "id" = ? FOR UPDATE SKIP LOCKED',
    "fanned_out_through")
_HOLD_ENDPOINT = Statement('SELECT "id" FROM "webhook_endpoint" WHERE "id" = ? FOR UPDATE')


def hold_endpoint(endpoint_id):
    """Inside a write transaction that changes which delivery is a chat's head: wait for, and
    keep out, the endpoint's fan-out (PostgreSQL; SQLite's IMMEDIATE transaction is alone).
    Without it a fan-out could queue a chat's next event as a follower of a head that is
    finishing at that moment, and the chat would have no head left."""
    if not is_sqlite():
        _HOLD_ENDPOINT.execute(endpoint_id)


def lock_endpoint(endpoint_id):
    """Inside a write transaction: take the endpoint's row to copy new events into its
    deliveries, one sender at a time; its `fanned_out_through`, or None when another sender
    has it (PostgreSQL). SQLite's IMMEDIATE transaction is alone already."""
    statement = ENDPOINT_PROGRESS if is_sqlite() else _LOCK_ENDPOINT
    return statement.value(endpoint_id)


ANY_DUE_DELIVERY = Statement(
    'SELECT 1 FROM "webhook_delivery" WHERE "endpoint_id" = ? AND "state" = ? AND "head" = 1 '
    'AND "next_attempt_at" <= ? AND ("claimed_until" IS NULL OR "claimed_until" < ?) LIMIT 1')
# The soonest retry still to come (what is due already was just claimed).
NEXT_ATTEMPT = Statement(
    'SELECT MIN("next_attempt_at") FROM "webhook_delivery" '
    'WHERE "endpoint_id" = ? AND "state" = ? AND "head" = 1 AND "next_attempt_at" > ?')
EVENTS_TO_FAN_OUT = Statement(
    'SELECT "id", "chat_id", "type" FROM "event" WHERE "id" > ? AND "id" <= ? ORDER BY "id"',
    "id chat_id type", "EventToFanOut")
CHAT_HAS_PENDING = Statement(
    'SELECT 1 FROM "webhook_delivery" WHERE "endpoint_id" = ? AND "state" = ? '
    'AND "chat_id" = ? LIMIT 1')
INSERT_DELIVERY = Statement(
    'INSERT INTO "webhook_delivery" ("endpoint_id", "event_id", "chat_id", "state", "head", '
    '"attempts", "next_attempt_at", "created_at") VALUES (?, ?, ?, ?, ?, 0, ?, ?)')
# A chat's head finished (delivered or failed): its next pending delivery is the head now.
PROMOTE_NEXT = Statement(
    'UPDATE "webhook_delivery" SET "head" = 1 WHERE "id" = (SELECT "id" FROM '
    '"webhook_delivery" WHERE "endpoint_id" = ? AND "state" = ? AND "chat_id" = ? '
    'ORDER BY "event_id" LIMIT 1)')
SET_FANNED_OUT = Statement(
    'UPDATE "webhook_endpoint" SET "fanned_out_through" = ? WHERE "id" = ?')

# Claims the endpoint's due heads (see `models.WebhookDelivery.head`), the longest due first.
# A claim lasts until `claimed_until`; a sender that died gives its claims up that way.
_CLAIM = (
    'UPDATE "webhook_delivery" SET "claim" = ?, "claimed_until" = ? WHERE "id" IN ('
    'SELECT "id" FROM "webhook_delivery" WHERE "endpoint_id" = ? AND "state" = ? '
    'AND "head" = 1 AND "next_attempt_at" <= ? '
    'AND ("claimed_until" IS NULL OR "claimed_until" < ?) '
    'ORDER BY "next_attempt_at" LIMIT ?{lock})')
_CLAIM_DELIVERIES = {
    "sqlite": Statement(_CLAIM.format(lock="")),  # its IMMEDIATE transaction is alone
    # Two senders claiming at once each skip the rows the other is taking.
    "postgresql": Statement(_CLAIM.format(lock=" FOR UPDATE SKIP LOCKED")),
}


def claim_deliveries(claim, until, endpoint_id, state, now, count):
    """Inside a write transaction: mark up to `count` deliveries as claimed by `claim`."""
    statement = _CLAIM_DELIVERIES["sqlite" if is_sqlite() else "postgresql"]
    statement.execute(claim, until, endpoint_id, state, now, now, count)


CLAIMED_DELIVERIES = Statement(
    'SELECT d."id", d."event_id", d."chat_id", d."attempts", d."created_at", d."claim", '
    'e."type", e."body" FROM "webhook_delivery" AS d '
    'LEFT JOIN "event" AS e ON e."id" = d."event_id" '
    # (The first three through the claim's own index: only heads are looked at. No ORDER BY:
    # it would have SQLite walk the endpoint's every delivery in event order instead.)
    'WHERE d."endpoint_id" = ? AND d."state" = ? AND d."head" = 1 AND d."claim" = ?',
    "id event_id chat_id attempts created_at claim type body", "ClaimedDelivery")
FINISH_ATTEMPT = Statement(
    'UPDATE "webhook_delivery" SET "state" = ?, "attempts" = "attempts" + 1, '
    '"next_attempt_at" = ?, "claim" = NULL, "claimed_until" = NULL, "last_attempt_at" = ?, '
    '"last_status" = ?, "last_error" = ?, "delivered_at" = ? WHERE "id" = ? AND "claim" = ?')
DELIVERY_COUNTS = Statement(
    'SELECT "state", COUNT(*) AS "count", MIN("created_at") AS "oldest" '
    'FROM "webhook_delivery" WHERE "endpoint_id" = ? GROUP BY "state"',
    "state count oldest", "DeliveryCount")
NOTE_ERROR = Statement(
    'UPDATE "webhook_endpoint" SET "last_error" = ?, "last_error_at" = ? WHERE "id" = ?')
LAST_ERROR = Statement(
    'SELECT "last_error", "last_error_at" FROM "webhook_endpoint" WHERE "id" = ?',
    "last_error last_error_at", "LastError")
FIRST_EVENT_SINCE = Statement('SELECT MIN("id") FROM "event" WHERE "created_at" >= ?')
RETRY_PENDING_NOW = Statement(
    'UPDATE "webhook_delivery" SET "next_attempt_at" = ? '
    'WHERE "endpoint_id" = ? AND "state" = ? AND "event_id" >= ?')
# A failed delivery queued again starts over: attempts, and the time it may be retried for.
REQUEUE_FAILED = Statement(
    'UPDATE "webhook_delivery" SET "state" = ?, "attempts" = 0, "next_attempt_at" = ?, '
    '"created_at" = ?, "head" = 0 WHERE "endpoint_id" = ? AND "state" = ? AND "event_id" >= ?')
# A chat with pending deliveries and no head (failed ones queued again; or a guard against a
# chat left without one): its oldest pending delivery becomes its head. A chat that has a head
# keeps it, even a newer one in flight: a chat never has two attempts under way.
ELECT_MISSING_HEADS = Statement(
    'UPDATE "webhook_delivery" SET "head" = 1 WHERE "endpoint_id" = ? AND "state" = ? '
    'AND ("chat_id" IS NULL OR "event_id" IN (SELECT MIN("event_id") FROM "webhook_delivery" '
    'WHERE "endpoint_id" = ? AND "state" = ? GROUP BY "chat_id" HAVING MAX("head") = 0))')
EVENT_TIME = Statement('SELECT "created_at" FROM "event" WHERE "id" = ?', "created_at")
