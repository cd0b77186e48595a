"""How chats and messages look in the API's answers, as each `Side` sees them."""
import events
from chat import chats
from models import as_datetime, iso_utc


def whole_if_integral(number):
    """1679223400.0 back as 1679223400, the way the client sent it."""
    return int(number) if float(number).is_integer() else number


def message_json(row, side):
    """A `MessageRow` as `side` sees it: customers see no more of an agent than a display
    name."""
    item = {"messageId": row.public_id, "seq": row.seq, "sender": row.sender,
            "message": row.body, "image_url": row.image_url,
            "created_at": iso_utc(as_datetime(row.created_at))}
    by_agent = row.agent_id is not None
    if side.sees_everything:
        item["agent"] = ({"name": row.agent_name, "display_name": row.agent_display_name}
                         if by_agent else None)
    else:
        item["agent_name"] = row.agent_display_name if by_agent else None
    return item


def chat_json(row, side, detail=False):
    """A `ChatListRow` as `side` sees it; agents also see the customer and what the chat was
    created with, and with `detail` every read mark."""
    item = {"chatId": row.public_id, "status": row.status,
            "created_at": iso_utc(as_datetime(row.created_at)),
            "updated_at": iso_utc(as_datetime(row.updated_at)),
            "last_message": {
                "seq": row.last_message_seq, "sender": row.last_message_sender,
                "preview": row.last_message_preview,
                "created_at": iso_utc(as_datetime(row.last_message_created_at))},
            "unread": row.unread}
    if side.sees_everything:
        item.update(customer={"email": row.customer_email, "name": row.customer_name},
                    name=row.name, plan_id=row.plan_id,
                    account_created_at=whole_if_integral(row.account_created_at),
                    assignee=assignee_json(row), waiting_since=optional_time(row.waiting_since))
    if detail and side.sees_everything:
        item.update(last_seq=row.last_seq, customer_read_seq=row.customer_read_seq,
                    agent_read_seq=row.agent_read_seq)
    return item


def assignee_json(row):
    if row.assignee_name is None:
        return None
    return {"name": row.assignee_name, "display_name": row.assignee_display_name}


def optional_time(value):
    return None if value is None else iso_utc(as_datetime(value))


def chat_page_json(rows, next_before, side):
    return {"chats": [chat_json(row, side) for row in rows], "next_before": next_before,
            "has_more": next_before is not None}


def poll_json(chat, after, page, side):
    """A long-poll's `Page` of messages after `after`; `retry_after` only on a poll that asked
    to wait and could not (every waiting slot taken): poll again after that many seconds."""
    answer = {"chatId": chat.public_id, "status": page.status,
              "messages": [message_json(row, side) for row in page.messages],
              "next_after": page.messages[-1].seq if page.messages else after,
              "has_more": page.has_more}
    if page.retry_after is not None:
        answer["retry_after"] = page.retry_after
    return answer


def poll_headers(page):
    """The same hint as a `Retry-After` header, for clients that look there."""
    return None if page.retry_after is None else {"Retry-After": str(page.retry_after)}


def read_mark_json(chat, read_seq, unread):
    return {"chatId": chat.public_id, "read_seq": read_seq, "unread": unread}


def events_json(page):
    """An `events.EventPage`: each event exactly as the log (and a webhook) has it."""
    answer = {"events": [events.as_json(row) for row in page.events],
              "next_after": page.next_after, "has_more": page.has_more}
    if page.retry_after is not None:
        answer["retry_after"] = page.retry_after
    return answer


def replies_json(replies, next_after, has_more):
    return {"replies": replies, "next_after": next_after, "has_more": has_more}


def customer_json(customer, rows, next_before):
    """`workspace.customer_with_chats`'s answer: the customer and a page of their chats."""
    if customer["account_created_at"] is not None:
        customer = {**customer,
                    "account_created_at": whole_if_integral(customer["account_created_at"])}
    return {"customer": customer, **chat_page_json(rows, next_before, chats.AGENT)}


def notes_json(chat, notes, next_after, has_more):
    return {"chatId": chat.public_id, "notes": notes, "next_after": next_after,
            "has_more": has_more}
