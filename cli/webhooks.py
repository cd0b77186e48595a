"""`flask --app app webhooks run|status|retry|test`: the webhook sender as a worker of its own,
and what an operator needs to see and act on deliveries."""
import datetime
import re
import signal
import threading

import click
from flask import current_app
from flask.cli import AppGroup

import events
from cli.common import database_errors_explained, needs_current_schema
from events import http as webhook_http
from events import webhooks as sending
from models import as_datetime, database, iso_utc, utcnow, write_transaction
from storage import deliveries as webhook_queries

group = AppGroup("webhooks", help="Deliver webhooks, and see or retry deliveries.")


def configured_urls():
    urls = current_app.config["WEBHOOK_URL"]
    if not urls:
        raise click.ClickException("WEBHOOK_URL is not set: there is no endpoint")
    return urls


@group.command("run")
@needs_current_schema
def run_sender():
    """Deliver webhooks from this process until stopped (SIGTERM or Ctrl+C), beside or instead
    of the servers' own senders (WEBHOOK_SENDER=false)."""
    urls = configured_urls()
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    sender = sending.Sender(current_app.config)
    sender.start()
    click.echo(f"delivering webhooks to {len(urls)} endpoint(s); SIGTERM or Ctrl+C stops",
               err=True)
    while not stopped.wait(1):
        pass
    click.echo("stopping: waiting for the deliveries in flight", err=True)
    sender.stop()


def age(moment):
    """How long ago: "45s", "3m 20s", "2h 5m", "1d 4h"."""
    seconds = max(0, int((utcnow() - as_datetime(moment)).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{value}{unit}" for value, unit in ((days, "d"), (hours, "h"), (minutes, "m"),
                                                 (seconds, "s")) if value]
    return " ".join(parts[:2]) or "0s"


def endpoint_report(endpoint, newest, configured):
    """The lines `status` prints for one endpoint."""
    counts = {row.state: row for row in webhook_queries.DELIVERY_COUNTS.all(endpoint.id)}
    not_queued = max(0, newest - endpoint.fanned_out_through)
    pending = counts.get(sending.PENDING)
    oldest = [pending.oldest] if pending else []
    if not_queued:
        first = webhook_queries.EVENT_TIME.value(endpoint.fanned_out_through + 1)
        oldest += [first] if first is not None else []
    pending_count = (pending.count if pending else 0) + not_queued
    failed, delivered = (counts[state].count if state in counts else 0
                         for state in (sending.FAILED, sending.DELIVERED))
    oldest_age = f" (oldest {age(min(map(as_datetime, oldest)))})" if oldest else ""
    lines = [f"{webhook_http.describe(endpoint.url)} (endpoint {endpoint.id}"
             f"{'' if configured else ', not in WEBHOOK_URL: not sent'})",
             f"  pending {pending_count}{oldest_age}, failed {failed}, delivered {delivered}"]
    last = webhook_queries.LAST_ERROR.one(endpoint.id)
    if last.last_error is not None:
        when = as_datetime(last.last_error_at)
        lines.append(f"  last error: {last.last_error} at {iso_utc(when)} ({age(when)} ago)")
    return lines


@group.command("status")
@needs_current_schema
def status():
    """Per endpoint: pending and failed deliveries, the oldest pending one's age, and the last
    error and when."""
    urls = set(current_app.config["WEBHOOK_URL"])
    with database_errors_explained():
        endpoints = webhook_queries.ALL_ENDPOINTS.all()
        newest = events.newest_id()
        if not endpoints:
            click.echo("no webhook endpoint yet" + ("" if urls else " (WEBHOOK_URL is not set)"))
        for endpoint in endpoints:
            for line in endpoint_report(endpoint, newest, endpoint.url in urls):
                click.echo(line)
    database.close()


RELATIVE = re.compile(r"\A([0-9]+)([smhd])\Z", re.ASCII)
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(value):
    """A moment in naive UTC from "30m", "2h", "7d" ago, or an ISO date or time (UTC unless it
    says otherwise)."""
    try:
        match = RELATIVE.match(value.strip())
        if match:
            return utcnow() - datetime.timedelta(**{UNITS[match[2]]: int(match[1])})
        moment = datetime.datetime.fromisoformat(value.strip())
        if moment.tzinfo is not None:
            moment = moment.astimezone(datetime.UTC).replace(tzinfo=None)
        return moment
    except (ValueError, OverflowError):  # not a time, or none a computer can hold
        raise click.BadParameter("use 30m, 2h, 7d or an ISO time such as "
                                 "2026-11-25T08:00:00Z", param_hint="--since") from None


@group.command("retry")
@click.option("--failed", is_flag=True, help="Also queue failed deliveries again.")
@click.option("--since", "since", default=None, metavar="WHEN",
              help="Only events since WHEN: 30m, 2h, 7d ago, or an ISO time (UTC).")
@needs_current_schema
def retry(failed, since):
    """Send the pending deliveries now instead of at their next retry (with --failed, the
    failed ones too, starting their retries over)."""
    first_id = 0
    if since is not None:
        with database_errors_explained():
            first_id = webhook_queries.FIRST_EVENT_SINCE.value(parse_since(since))
        if first_id is None:
            click.echo("no event since then: nothing to retry")
            return
    urls = set(configured_urls())
    with database_errors_explained(), write_transaction():
        now = utcnow()
        for endpoint in webhook_queries.ALL_ENDPOINTS.all():
            if endpoint.url not in urls:
                continue
            # First, as a sender recording an attempt does.
            webhook_queries.hold_endpoint(endpoint.id)
            due = webhook_queries.RETRY_PENDING_NOW.execute(now, endpoint.id, sending.PENDING,
                                                            first_id).rowcount
            requeued = webhook_queries.REQUEUE_FAILED.execute(
                sending.PENDING, now, now, endpoint.id, sending.FAILED,
                first_id).rowcount if failed else 0
            if requeued:
                sending.elect_missing_heads(endpoint.id)
            click.echo(f"{webhook_http.describe(endpoint.url)}: {due} pending due now"
                       + (f", {requeued} failed queued again" if failed else ""))
    database.close()


@group.command("test")
def test():
    """Send a `ping` event to every endpoint now and show what each answered."""
    config = current_app.config
    all_answered = True
    for url in configured_urls():
        outcome, took = webhook_http.ping(url, config["WEBHOOK_SECRET"])
        answer = f"HTTP {outcome.status}" if outcome.status is not None else outcome.error
        body = f": {outcome.answer!r}" if outcome.answer else ""
        verdict = "ok" if outcome.delivered else "FAILED"
        click.echo(f"{webhook_http.describe(url)}: {verdict}: {answer} in {took:.0f} ms{body}")
        all_answered &= outcome.delivered
    if not all_answered:
        raise SystemExit(1)
