"""What a webhook sender's claim costs behind a backlog: a receiver that has been down a while.

    python bench/claims.py                     # SQLite, in a temporary folder
    python bench/claims.py --postgres URL      # a PostgreSQL database (emptied)

For each backlog size, pending deliveries spread over 1,000 chats: first every chat's head
waiting for its retry (nothing to claim: the usual state while the receiver is down), then
every head due (a claim takes 8). Prints the milliseconds of `webhooks.claim` (the write lock
is held for the part inside its transaction).
"""
import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH))

from run import reset_postgres  # noqa: E402

import models  # noqa: E402
from events import webhooks  # noqa: E402
from storage import migrations  # noqa: E402

CHATS = 1000


def fill(pending, heads_due):
    now = models.utcnow()
    waiting = now + datetime.timedelta(hours=1)
    rows = [(1, number + 1, number % CHATS, "pending", int(number < CHATS), 0,
             now if heads_due or number >= CHATS else waiting, now)
            for number in range(pending)]
    with models.write_transaction():
        models.database.execute_sql('DELETE FROM "webhook_delivery"')
        cursor = models.database.cursor()
        cursor.executemany(
            'INSERT INTO "webhook_delivery" ("endpoint_id", "event_id", "chat_id", "state", '
            '"head", "attempts", "next_attempt_at", "created_at") VALUES '
            + ("(?, ?, ?, ?, ?, ?, ?, ?)" if models.is_sqlite()
               else "(%s, %s, %s, %s, %s, %s, %s, %s)"), rows)
    models.database.execute_sql("ANALYZE")


def claim_ms(rounds=20):
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        claimed = webhooks.claim(1, webhooks.PER_ENDPOINT, datetime.timedelta(seconds=30))
        times.append((time.perf_counter() - started) * 1000)
        if claimed:  # give them back, so that every round finds the same
            with models.write_transaction():
                models.database.execute_sql(
                    'UPDATE "webhook_delivery" SET "claim" = NULL, "claimed_until" = NULL')
    return statistics.median(times), len(claimed)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", metavar="URL")
    args = parser.parse_args()
    if args.postgres:
        reset_postgres(args.postgres)
        url = args.postgres
    else:
        url = f"sqlite:///{tempfile.mkdtemp(prefix='supportzen-claims-')}/claims.db"
    models.configure_database(url)
    migrations.upgrade()
    with models.write_transaction():
        models.database.execute_sql(
            'INSERT INTO "webhook_endpoint" ("url", "fanned_out_through", "created_at") '
            "VALUES ('http://127.0.0.1:9/', 0, '2026-01-01 00:00:00')")
    print(f"{'backend':<10} {'pending':>9} {'heads':<7} {'claim ms':>9} claimed")
    for pending in (1_000, 25_000, 250_000):
        for heads_due in (False, True):
            fill(pending, heads_due)
            median, claimed = claim_ms()
            print(f"{'SQLite' if models.is_sqlite() else 'PostgreSQL':<10} {pending:>9,} "
                  f"{'due' if heads_due else 'waiting':<7} {median:>9.2f} {claimed}")


if __name__ == "__main__":
    main()
