"""What a named row costs: building the row of a hot statement as a plain tuple (what the
driver gives), as the named tuple `queries.Statement` builds, as a slotted dataclass, and as a
peewee model instance; then one whole lookup (`FIND_CHAT`) through `Statement.one`.

    python bench/rows.py

Prints nanoseconds per row (the best of several rounds, so other load on the machine
inflates nothing) and each figure as a ratio to the plain tuple's.
"""
import dataclasses
import os
import sys
import tempfile
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import models
from storage import migrations, queries

ROUNDS = 7
NUMBER = 200_000
ROW = (17, "chat-abcdefghijklmnopqrstuv", 3, "open", 12, 10, 11)


@dataclasses.dataclass(slots=True)
class ChatDataclass:
    id: int
    public_id: str
    user_id: int
    status: str
    last_seq: int
    customer_read_seq: int
    agent_read_seq: int


def best_ns(statement, number=NUMBER, **names):
    timer = timeit.Timer(statement, globals=names)
    return min(timer.repeat(ROUNDS, number)) / number * 1e9


def building_costs():
    return {
        "tuple (the driver's row, kept as is)": best_ns("tuple(row)", row=ROW),
        "named tuple (queries.Statement)": best_ns("make(row)", make=queries.FIND_CHAT._row,
                                                   row=ROW),
        "slotted dataclass": best_ns("make(*row)", make=ChatDataclass, row=ROW),
        "peewee model instance": best_ns(
            "make(id=row[0], public_id=row[1], user=row[2], status=row[3], last_seq=row[4], "
            "customer_read_seq=row[5], agent_read_seq=row[6])", make=models.Chat, row=ROW),
    }


def lookup_costs(folder):
    models.configure_database(f"sqlite:///{folder}/rows.db")
    migrations.upgrade()
    user = models.User.create(email="rows@example.com", uuid=None)
    models.Chat.create(public_id=ROW[1], user=user, account_created_at=0)
    raw_sql = queries.FIND_CHAT.sql
    try:
        return {
            "lookup, raw cursor tuple": best_ns(
                "execute(sql, (public_id,)).fetchone()", number=20_000,
                execute=models.database.execute_sql, sql=raw_sql, public_id=ROW[1]),
            "lookup, Statement.one (named row)": best_ns(
                "one(public_id)", number=20_000, one=queries.FIND_CHAT.one,
                public_id=ROW[1]),
        }
    finally:
        models.database.close_all()


def report(title, costs):
    base = next(iter(costs.values()))
    print(title)
    for name, nanoseconds in costs.items():
        print(f"  {name:40} {nanoseconds:8.0f} ns  x {nanoseconds / base:.2f}")


def main():
    report("Building one row:", building_costs())
    with tempfile.TemporaryDirectory() as folder:
        report("One chat lookup on SQLite:", lookup_costs(folder))


if __name__ == "__main__":
    main()
