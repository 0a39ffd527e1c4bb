"""``stoplist events``: SNS subscriptions of the SES webhook, listed and confirmed."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from app.cli.common import JsonOpt, dump, err, out, run, short_time
from app.container import Services
from app.events import EventStore, PendingSubscription
from app.events.sns import ConfirmError, confirm_subscription

events_app = typer.Typer(help="Delivery-event webhooks (SES subscriptions).", no_args_is_help=True)


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
