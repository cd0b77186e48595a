"""Fill a database fast, with bulk inserts: users, their chats, messages, and one agent.

    python bench/seed.py DATABASE_URL --users 1000 --chats 10000 --messages 1000000

Writes the credentials the load scripts need to a JSON file (never used in production).
"""
import argparse
import datetime
import hashlib
import hmac
import json
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import models
from chat import accounts
from storage import migrations

BATCH = 2_000


def insert_batches(model, rows):
    with models.database.atomic():
        for start in range(0, len(rows), BATCH):
            model.insert_many(rows[start:start + BATCH]).execute()


def seed(url, users, chats, messages, agent_name="bench-agent"):
    models.configure_database(url)
    migrations.upgrade()
    started = time.monotonic()
    now = models.utcnow()
    keys = [str(uuid.uuid4()) for _ in range(users)]
    insert_batches(models.User, [
        {"email": f"user{n}@bench.example", "uuid": keys[n], "name": f"User {n}",
         "created_at": now, "updated_at": now} for n in range(users)])
    user_ids = [user.id for user in models.User.select(models.User.id).order_by(models.User.id)]
    per_chat = max(1, messages // chats)
    chat_rows = []
    for number in range(chats):
        stamp = now - datetime.timedelta(seconds=chats - number)
        chat_rows.append({"public_id": models.new_public_id("chat"),
                          "user": user_ids[number % users], "status": models.CHAT_OPEN,
                          "name": "Bench Plan", "plan_id": 1, "account_created_at": 1600000000,
                          "last_seq": per_chat, "created_at": stamp, "updated_at": stamp})
    insert_batches(models.Chat, chat_rows)
    chat_ids = [chat.id for chat in models.Chat.select(models.Chat.id).order_by(models.Chat.id)]
    with models.database.atomic():
        for first in range(0, chats, max(1, BATCH // per_chat)):
            rows = [{"public_id": models.new_public_id("msg"), "chat": chat_id, "seq": seq,
                     "sender": models.SENDER_USER if seq % 2 else models.SENDER_AGENT,
                     "body": f"message {seq} of a seeded chat", "created_at": now}
                    for chat_id in chat_ids[first:first + max(1, BATCH // per_chat)]
                    for seq in range(1, per_chat + 1)]
            for start in range(0, len(rows), BATCH):
                models.Message.insert_many(rows[start:start + BATCH]).execute()
    _, agent_token = accounts.add_agent(agent_name)
    # Planner statistics, as a database in service has them (PostgreSQL's autovacuum would
    # gather them after a while; right after a bulk load it would plan for empty tables).
    models.database.execute_sql("ANALYZE")
    elapsed = time.monotonic() - started
    credentials = {
        "agent_token": agent_token,
        "users": [{"email": f"user{n}@bench.example",
                   "token": hmac.new(keys[n].encode(), f"user{n}@bench.example".encode(),
                                     hashlib.sha256).hexdigest()} for n in range(users)],
        "chats": [{"chat_id": row["public_id"], "user": number % users}
                  for number, row in enumerate(chat_rows)],
        "seconds": round(elapsed, 1),
    }
    models.database.close_all()
    return credentials


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--chats", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--credentials", default="bench-credentials.json")
    args = parser.parse_args()
    credentials = seed(args.url, args.users, args.chats, args.messages)
    with open(args.credentials, "w") as handle:
        json.dump(credentials, handle)
    print(f"seeded {args.users} users, {args.chats} chats, {args.messages} messages "
          f"in {credentials['seconds']} s")


if __name__ == "__main__":
    main()
