"""``stoplist events``: SNS subscriptions of the SES webhook, listed and confirmed; the
unreadable records kept (``errors``); why a stored event decided what it did (``explain``)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from app.cli.common import JsonOpt, dump, err, out, run, short_time
from app.container import Services
from app.events import EventStore, KeptError, PendingSubscription
from app.events.sns import ConfirmError, confirm_subscription
from dsn.explain import render_event_text
from events import Source

events_app = typer.Typer(
    help="Delivery events: SES subscriptions, unreadable records, explanations.",
    no_args_is_help=True,
)


def _row(sub: PendingSubscription) -> dict[str, object]:
    return {
        "id": sub.id,
        "received_at": sub.received_at.isoformat(),
        "kind": sub.kind,
        "topic_arn": sub.topic_arn,
        "subscribe_url": sub.subscribe_url,
        "confirmed_at": sub.confirmed_at.isoformat() if sub.confirmed_at else None,
    }


@events_app.command("subscriptions")
def subscriptions(
    all_: Annotated[bool, typer.Option("--all", help="Confirmed ones too")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List the SNS subscription confirmations the SES webhook received."""

    async def go(s: Services) -> list[PendingSubscription]:
        return await EventStore(s).subscriptions(pending_only=not all_)

    found = run(go)
    if as_json:
        dump([_row(sub) for sub in found])
        return
    table = Table("id", "received", "kind", "topic", "confirmed")
    for sub in found:
        confirmed = short_time(sub.confirmed_at) if sub.confirmed_at else "-"
        table.add_row(str(sub.id), short_time(sub.received_at), sub.kind, sub.topic_arn, confirmed)
    out.print(table)


@events_app.command("confirm-ses")
def confirm_ses(
    ids: Annotated[list[int] | None, typer.Argument(help="Subscription ids (default: all)")] = None,
) -> None:
    """Confirm pending SNS subscriptions by fetching their SubscribeURL (SNS hosts only)."""

    async def go(s: Services) -> int:
        store = EventStore(s)
        failed = 0
        for sub in await store.subscriptions():
            if (ids and sub.id not in ids) or sub.kind != "SubscriptionConfirmation":
                continue
            try:
                await confirm_subscription(store, sub)
            except ConfirmError as exc:
                err.print(f"[red]{sub.id} ({sub.topic_arn}): {exc}[/red]")
                failed += 1
                continue
            out.print(f"confirmed {sub.id}: {sub.topic_arn}")
        return failed

    if run(go):
        raise typer.Exit(1)


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{value!r}: an ISO 8601 date-time, e.g. 2026-01-05T12:00:00Z", param_hint="--since"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@events_app.command("errors")
def errors(
    source: Annotated[Source | None, typer.Option(help="Only this source's records")] = None,
    since: Annotated[
        str | None, typer.Option(help="Received at or after (ISO 8601, naive = UTC)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """List the log lines and webhook records that could not be read: where and why."""
    after = _since(since)

    async def go(s: Services) -> list[KeptError]:
        kind = source.value if source else None
        return await EventStore(s).kept_errors(source=kind, since=after, limit=limit)

    found = run(go)
    if as_json:
        dump([e.to_json() for e in found])
        return
    table = Table("received", "source", "location", "reason", "excerpt")
    for e in found:
        table.add_row(
            short_time(e.received_at),
            e.source,
            escape(e.location),
            escape(e.reason),
            escape(e.excerpt[:80]),
        )
    out.print(table)


@events_app.command("explain")
def explain(
    ref: Annotated[str, typer.Argument(help="Event id, or dedupe id (history: delivery_event)")],
    as_json: JsonOpt = False,
) -> None:
    """Show why a stored delivery event decided what it did: the vendor's category and what it
    means to us, our rule with its source and examples, where they disagree, the reply, and where
    the event was read."""

    async def go(s: Services) -> dict[str, Any] | None:
        return await EventStore(s).explanation(ref)

    found = run(go)
    if found is None:
        err.print(f"[red]no stored delivery event {escape(ref)}[/red]")
        raise typer.Exit(1)
    if as_json:
        dump(found)
    else:
        sys.stdout.write(render_event_text(found))
