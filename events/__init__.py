"""The event log: one entry for each change that matters, written in the change's transaction.

Guarantees kept here:
- an event exists if and only if its change committed: `record` runs inside the change's own
  write transaction;
- ids are 1, 2, 3, ... in commit order, with no gap: taking the next id from the counter row
  holds it until commit (see `queries.NEXT_EVENT_ID`), as `seq` is taken per chat. A reader
  that asks for the events after the last id it saw never skips one and never sees one twice,
  on either backend and with any number of writers;
- events older than EVENT_RETENTION_DAYS are purged, except those a webhook still has to
  deliver; a reader whose cursor fell behind the purge is told so (`CursorExpired`) instead of
  silently missing events.

The agent feed (api/agent.py through api/longpoll.py) and the webhooks (events/webhooks.py) read it.
Payloads carry what a receiver needs to act (the chat, its customer, the message) and never a
uuid or a token.
"""
import json
from typing import NamedTuple

from models import CHAT_CLOSED, as_datetime, iso_utc, utcnow, write_transaction
from storage import deliveries as webhook_queries
from storage import queries
from storage.changes import changes

CHAT_CREATED = "chat.created"
MESSAGE_CREATED = "message.created"
CHAT_CLOSED_EVENT = "chat.closed"
CHAT_REOPENED = "chat.reopened"
CHAT_READ = "chat.read"
CHAT_ASSIGNED = "chat.assigned"
NOTE_CREATED = "note.created"  # for agents only: webhooks get it with WEBHOOK_INCLUDE_NOTES

PURGE_BATCH = 1000
DELIVERY_PENDING = "pending"


class CursorExpired(Exception):
    """A cursor older than the events still kept, or one this log never handed out (a
    database restored from a backup, say): the reader must reload what it shows."""


def record(event_type, data, chat_id=None):
    """Inside the write transaction of the change: append an event; returns its id."""
    now = utcnow()
    event_id = queries.NEXT_EVENT_ID.value()
    body = json.dumps({"id": event_id, "type": event_type, "created_at": iso_utc(now),
                       "data": data}, ensure_ascii=False, separators=(",", ":"))
    queries.INSERT_EVENT.execute(event_id, event_type, chat_id, now, body)
    changes.announce_event(event_id)
    return event_id


# --- what each event says ------------------------------------------------------------------

def chat_data(chat_id):
    """What events tell of a chat, as it is now in this transaction."""
    chat = queries.EVENT_CHAT.one(chat_id)
    return chat_summary(chat.public_id, chat.status, chat.name, chat.plan_id, chat.email,
                        chat.customer_name)


def chat_summary(public_id, status, name, plan_id, email, customer_name):
    """The same from what the writer has at hand (a send knows it all: no query)."""
    return {"chatId": public_id, "status": status, "name": name, "plan_id": plan_id,
            "customer": {"email": email, "name": customer_name}}


def actor(agent):
    """Who made a change: an agent (by name), or the chat's customer."""
    if agent is None:
        return {"type": "customer"}
    return {"type": "agent", "name": agent.name, "display_name": agent.display_name}


def agent_json(agent):
    """An agent as events and answers show one: {name, display_name}, or None."""
    return None if agent is None else {"name": agent.name, "display_name": agent.display_name}


def chat_created(chat_id, chat):
    """`chat`: its `chat_summary`. (Recorded right before its first message's.)"""
    record(CHAT_CREATED, {"chat": chat}, chat_id)


def message_created(chat_id, chat, message):
    """`chat`: its `chat_summary`; `message`: a `chats.StoredMessage`."""
    agent = message.agent
    record(MESSAGE_CREATED, {"chat": chat, "message": {
        "messageId": message.public_id, "seq": message.seq, "sender": message.sender,
        "message": message.body, "image_url": message.image_url,
        "created_at": iso_utc(message.created_at),
        "agent": agent_json(agent)}}, chat_id)


def status_changed(chat_id, status, agent):
    record(CHAT_CLOSED_EVENT if status == CHAT_CLOSED else CHAT_REOPENED,
           {"chat": chat_data(chat_id), "by": actor(agent)}, chat_id)


def assigned(chat_id, assignee, agent):
    """`agent` gave the chat to `assignee` (None: to nobody)."""
    record(CHAT_ASSIGNED, {"chat": chat_data(chat_id), "assignee": agent_json(assignee),
                           "by": actor(agent)}, chat_id)


def note_created(chat_id, note):
    """`note`: the note as agents see it (`workspace.note_json`)."""
    record(NOTE_CREATED, {"chat": chat_data(chat_id), "note": note}, chat_id)


def read_mark_moved(chat_id, seq, agent):
    """The customer's read mark (no agent) or the agents' moved forward to `seq`."""
    record(CHAT_READ, {"chat": chat_data(chat_id), "by": actor(agent), "read_seq": seq},
           chat_id)


# --- reading -------------------------------------------------------------------------------

class EventPage(NamedTuple):
    """Events after a cursor, in id order (`EventRow`s: id, body as JSON text); `next_after`
    is the cursor to ask with next; `retry_after` as in `longpoll.Page`."""
    events: list
    next_after: int
    has_more: bool
    retry_after: int | None = None


def newest_id():
    return queries.NEWEST_EVENT_ID.value()


def page_after(after, limit, max_bytes):
    """The events with ids above `after`: at most `limit`, and no more than `max_bytes` of
    JSON but for the first. Raises `CursorExpired` when some of them were purged, or when
    `after` is beyond the newest event."""
    # Read first: every event up to `newest` had committed by then (it was taken in the same
    # transaction as its row), so one missing from the read below was purged.
    newest = newest_id()
    if after > newest:
        raise CursorExpired()
    rows = queries.EVENTS_AFTER.all(after, limit + 1)
    if (rows and rows[0].id != after + 1) or (not rows and after < newest):
        raise CursorExpired()
    count = min(len(rows), limit)
    size = 0
    for index, row in enumerate(rows[:count]):
        size += len(row.body.encode("utf-8", "surrogatepass"))
        if size > max_bytes and index > 0:
            count = index
            break
    page = rows[:count]
    return EventPage(page, page[-1].id if page else after, len(rows) > count)


def as_json(row):
    return json.loads(row.body)


# --- purging -------------------------------------------------------------------------------

def purge(retention, endpoint_ids=()):
    """Delete the events older than `retention` (a timedelta), oldest first, with their
    deliveries; but nothing that one of `endpoint_ids` (the configured webhooks) still has to
    send: neither an event it has not queued yet nor one still pending for it. Returns how
    many events went."""
    cutoff = utcnow() - retention
    purged = 0
    while True:
        with write_transaction():
            through = purge_boundary(cutoff, endpoint_ids)
            if through is None:
                return purged
            # (Pending deliveries stay, also those of a URL no longer configured: should it
            # come back, each fails at once for its purged event and hands its chat on.)
            queries.DELETE_DELIVERIES_THROUGH.execute(through, DELIVERY_PENDING)
            purged += queries.DELETE_EVENTS_THROUGH.execute(through).rowcount


def purge_boundary(cutoff, endpoint_ids):
    """The id through which the next batch may go, or None."""
    oldest = queries.OLDEST_EVENTS.all(0, PURGE_BATCH)
    through = None
    for row in oldest:
        if as_datetime(row.created_at) >= cutoff:
            break
        through = row.id
    if through is None:
        return None
    for endpoint_id in endpoint_ids:
        through = min(through, webhook_queries.ENDPOINT_PROGRESS.value(endpoint_id))
        pending = queries.OLDEST_UNDELIVERED_EVENT.value(endpoint_id, DELIVERY_PENDING)
        if pending is not None:
            through = min(through, pending - 1)
    return through if through >= oldest[0].id else None
