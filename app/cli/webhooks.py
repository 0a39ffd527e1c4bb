"""``stoplist deliver`` (the webhook delivery worker alone, for scaling out) and ``stoplist
webhooks list | replay``."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from app.cli.common import JsonOpt, dump, fast_event_loop, out, run
from app.container import Services
from app.suppression import parse_since
from app.webhooks.service import WebhookService

webhooks_app = typer.Typer(help="Outbound webhook subscriptions.", no_args_is_help=True)


def deliver(
    migrate: Annotated[bool, typer.Option(help="Apply migrations first")] = False,
) -> None:
    """Run the webhook delivery worker only (replicas share the work on PostgreSQL), on uvloop
    as ``serve`` runs."""
    import logging
    import signal

    from app.cli.common import settings_or_exit
    from app.db import run_migrations
    from app.webhooks.worker import DeliveryWorker

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if migrate:
        run_migrations(settings_or_exit())

    async def go(s: Services) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        worker = DeliveryWorker(s.db, WebhookService(s.db, s.settings))
        worker.start()
        try:
            await stop.wait()
        finally:
            await worker.stop()

    with fast_event_loop():
        run(go)


@webhooks_app.command("list")
def list_cmd(json_out: JsonOpt = False) -> None:
    """Every subscription, and the delivery queue."""

    async def go(s: Services) -> tuple[list[dict[str, object]], dict[str, object]]:
        service = WebhookService(s.db, s.settings)
        return await service.list_all(), await service.stats()

    subs, stats = run(go)
    if json_out:
        dump({"webhooks": subs, "queue": stats})
        return
    for sub in subs:
        state = "enabled" if sub["enabled"] else f"disabled ({sub['disabled_reason']})"
        out.print(f"{sub['id']:>4}  {sub['url']}  {state}")
    out.print(f"pending {stats['pending']}, dead {stats['dead']}")


@webhooks_app.command("replay")
def replay_cmd(
    subscription: Annotated[int, typer.Argument(help="Subscription id")],
    since: Annotated[str, typer.Option(help="ISO 8601 time or date")],
) -> None:
    """Queue again every event since a time for one subscription (dead ones included)."""
    when = parse_since(since)
    assert when is not None

    async def go(s: Services) -> int:
        return await WebhookService(s.db, s.settings).replay(subscription, when)

    out.print(f"queued {run(go)} events again")
