"""What the API answers inside `data`, as marshmallow schemas: api/openapi.py documents each
answer with one, and the schemathesis test holds every real answer to it."""
from marshmallow import Schema, fields, validate

STATUS = validate.OneOf(["open", "closed"])
SENDER = validate.OneOf(["user", "agent"])


def required(field_class, *args, **kwargs):
    return field_class(*args, required=True, **kwargs)


def nullable(field_class, *args, **kwargs):
    return field_class(*args, required=True, allow_none=True, **kwargs)


class ChatCreated(Schema):
    chatId = required(fields.String)
    messageId = required(fields.String)


class ReplySent(ChatCreated):
    seq = required(fields.Integer)


class CustomerMessage(Schema):
    messageId = required(fields.String)
    seq = required(fields.Integer)
    sender = required(fields.String, validate=SENDER)
    message = required(fields.String)
    image_url = nullable(fields.String)
    created_at = required(fields.DateTime)
    agent_name = nullable(fields.String, metadata={"description": "the agent's display name"})


class AgentRef(Schema):
    name = required(fields.String)
    display_name = nullable(fields.String)


class AgentMessage(CustomerMessage):
    class Meta:
        exclude = ("agent_name",)

    agent = nullable(fields.Nested, AgentRef)


class CustomerMessagePage(Schema):
    chatId = required(fields.String)
    status = required(fields.String, validate=STATUS)
    messages = required(fields.List, fields.Nested(CustomerMessage))
    next_after = required(fields.Integer)
    has_more = required(fields.Boolean)
    retry_after = fields.Integer(metadata={
        "description": "only when the poll asked to wait and every waiting slot was taken: "
                       "poll again after this many seconds (also in Retry-After)"})


class AgentMessagePage(CustomerMessagePage):
    messages = required(fields.List, fields.Nested(AgentMessage))


class Event(Schema):
    id = required(fields.Integer, metadata={"description": "1, 2, 3, ... with no gap"})
    type = required(fields.String, validate=validate.OneOf(
        ["chat.created", "message.created", "chat.closed", "chat.reopened", "chat.read",
         "chat.assigned", "note.created"]))
    created_at = required(fields.DateTime)
    data = required(fields.Dict, metadata={
        "description": "see the event types in docs/events-and-webhooks.md"})


class EventPage(Schema):
    events = required(fields.List, fields.Nested(Event))
    next_after = required(fields.Integer, metadata={"description": "the `after` to ask next"})
    has_more = required(fields.Boolean)
    retry_after = CustomerMessagePage._declared_fields["retry_after"]


class LastMessage(Schema):
    seq = required(fields.Integer)
    sender = required(fields.String, validate=SENDER)
    preview = required(fields.String)
    created_at = required(fields.DateTime)


class CustomerChat(Schema):
    chatId = required(fields.String)
    status = required(fields.String, validate=STATUS)
    created_at = required(fields.DateTime)
    updated_at = required(fields.DateTime)
    last_message = required(fields.Nested, LastMessage)
    unread = required(fields.Integer)


class Customer(Schema):
    email = required(fields.String)
    name = nullable(fields.String)


class AgentChat(CustomerChat):
    customer = required(fields.Nested, Customer)
    name = nullable(fields.String)
    plan_id = nullable(fields.Integer)
    account_created_at = required(fields.Float)
    assignee = nullable(fields.Nested, AgentRef)
    waiting_since = nullable(fields.DateTime, metadata={
        "description": "since when the customer waits for an answer (their message is the "
                       "newest), or null"})


class AgentChatDetail(AgentChat):
    last_seq = required(fields.Integer)
    agent_read_seq = required(fields.Integer)
    customer_read_seq = required(fields.Integer)


class CustomerChatPage(Schema):
    chats = required(fields.List, fields.Nested(CustomerChat))
    next_before = nullable(fields.String)
    has_more = required(fields.Boolean)


class AgentChatPage(CustomerChatPage):
    chats = required(fields.List, fields.Nested(AgentChat))


class ReadMark(Schema):
    chatId = required(fields.String)
    read_seq = required(fields.Integer)
    unread = required(fields.Integer)


class ChatStatus(Schema):
    chatId = required(fields.String)
    status = required(fields.String, validate=STATUS)


class UserSaved(Schema):
    email = required(fields.String)
    name = nullable(fields.String)
    created = required(fields.Boolean)


class UserRemoved(Schema):
    email = required(fields.String)
    removed = required(fields.Boolean)


class LongPolls(Schema):
    waiting = required(fields.Integer, metadata={"description": "polls waiting now"})
    capacity = required(fields.Integer, metadata={"description": "LONGPOLL_MAX_WAITERS"})
    woken = required(fields.Integer, metadata={
        "description": "waiting polls a change of their chat has woken since the start"})


class Health(Schema):
    database = required(fields.String)
    rate_limits = required(fields.String, validate=validate.OneOf(["ok", "memory fallback",
                                                                   "off"]))
    long_polls = required(fields.Nested, LongPolls)


# --- the agents' workspace ------------------------------------------------------------------

class UnreadCounts(Schema):
    mine = required(fields.Integer)
    unassigned = required(fields.Integer)
    all = required(fields.Integer)


class ChatCounts(UnreadCounts):
    """Open chats: the caller's, nobody's, all; `unread`: their customers' unread messages."""
    unread = required(fields.Nested, UnreadCounts)


class AgentList(Schema):
    agents = required(fields.List, fields.Nested(AgentRef))


class Assigned(Schema):
    chatId = required(fields.String)
    assignee = nullable(fields.Nested, AgentRef)


class NoteWritten(Schema):
    chatId = required(fields.String)
    noteId = required(fields.String)
    after_seq = required(fields.Integer, metadata={
        "description": "the chat's newest message when the note was written: its place"})


class AgentNote(Schema):
    noteId = required(fields.String)
    after_seq = required(fields.Integer)
    message = required(fields.String)
    agent = required(fields.Nested, AgentRef)
    created_at = required(fields.DateTime)


class NotePage(Schema):
    chatId = required(fields.String)
    notes = required(fields.List, fields.Nested(AgentNote))
    next_after = required(fields.Integer, metadata={"description": "the `after` to ask next"})
    has_more = required(fields.Boolean)


class StoredReply(Schema):
    shortcut = required(fields.String)
    text = required(fields.String)
    updated_at = required(fields.DateTime)
    updated_by = nullable(fields.Nested, AgentRef)


class SavedReplyList(Schema):
    replies = required(fields.List, fields.Nested(StoredReply))
    next_after = nullable(fields.String, metadata={"description": "the `after` to ask next"})
    has_more = required(fields.Boolean)


class SavedReplyDeleted(Schema):
    shortcut = required(fields.String)


class CustomerProfile(Schema):
    email = required(fields.String)
    name = nullable(fields.String)
    plan_name = nullable(fields.String, metadata={"description": "from their latest chat"})
    plan_id = nullable(fields.Integer, metadata={"description": "from their latest chat"})
    account_created_at = nullable(fields.Float, metadata={
        "description": "Unix seconds, as their latest chat was created with"})
    first_seen = nullable(fields.DateTime, metadata={
        "description": "when they first wrote: their first chat's created_at"})


class CustomerPage(AgentChatPage):
    customer = required(fields.Nested, CustomerProfile)
