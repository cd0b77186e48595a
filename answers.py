"""How chats and messages look in the API's answers, to customers and to agents."""
from flask import current_app

from chats import as_datetime, poll_messages


def whole_if_integral(number):
    """1679223400.0 back as 1679223400, the way the client sent it."""
    return int(number) if float(number).is_integer() else number


def iso(moment):
    return moment.isoformat(timespec="milliseconds") + "Z"


def message_json(row, for_agent):
    """A row of MESSAGES_AFTER as the customer or an agent sees it: customers see no more of
    an agent than a display name."""
    public_id, seq, sender, body, image_url, created_at, agent_id, name, display_name = row
    item = {"messageId": public_id, "seq": seq, "sender": sender, "message": body,
            "image_url": image_url, "created_at": iso(as_datetime(created_at))}
    if for_agent:
        item["agent"] = {"name": name, "display_name": display_name} if agent_id else None
    else:
        item["agent_name"] = display_name if agent_id else None
    return item


def chat_row_json(row):
    """What customers and agents both see of a row of `chat_list_statement`."""
    return {"chatId": row[1], "status": row[2], "created_at": iso(as_datetime(row[6])),
            "updated_at": iso(as_datetime(row[7])),
            "last_message": {"seq": row[13], "sender": row[14], "preview": row[15],
                             "created_at": iso(as_datetime(row[16]))},
            "unread": row[17]}


def customer_chat_json(row):
    return chat_row_json(row)


def agent_chat_json(row, detail=False):
    item = {**chat_row_json(row), "customer": {"email": row[11], "name": row[12]},
            "name": row[3], "plan_id": row[4], "account_created_at": whole_if_integral(row[5])}
    if detail:
        item.update(last_seq=row[8], customer_read_seq=row[9], agent_read_seq=row[10])
    return item


def poll_page(chat, fields, for_agent):
    """The answer to a poll with `after`, `limit` and `wait`, as the customer or an agent."""
    after = fields["after"]
    status, messages, has_more = poll_messages(chat, after, fields["limit"], fields["wait"],
                                               current_app.extensions["longpoll_slots"])
    return {"chatId": chat.public_id, "status": status,
            "messages": [message_json(row, for_agent) for row in messages],
            "next_after": messages[-1][1] if messages else after, "has_more": has_more}


