"""The suppression list: ``check``, ``suppress``, ``unsuppress``; ``cache rebuild``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from app.cli.common import (
    CLI_ACTOR,
    JsonOpt,
    dump,
    out,
    run,
)
from app.container import Services

cache_app = typer.Typer(help="The suppression cache.", no_args_is_help=True, rich_markup_mode=None)


def check(
    addresses: Annotated[list[str], typer.Argument(help="Addresses to check")],
    stream: Annotated[str | None, typer.Option(help="Sending stream")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Is each address suppressed (for this stream)?"""

    async def go(s: Services) -> list[dict[str, Any]]:
        return await s.suppressions.check_many(addresses, stream)

    results = run(go)
    if as_json:
        for r in results:
            dump(r)
        return
    for r in results:
        if r.get("error"):
            out.print(f"{r['address']}: [yellow]invalid[/yellow] ({r['error']})")
        elif r["suppressed"]:
            until = f", until {r['expires_at']}" if r.get("expires_at") else ", permanent"
            out.print(
                f"{r['address']}: [red]suppressed[/red] {r['outcome']}/{r['reason']} "
                f"({r['scope']}, since {r['since']}{until})"
            )
        else:
            out.print(f"{r['address']}: [green]not suppressed[/green]")


def suppress(
    address: Annotated[str, typer.Argument(help="The address to suppress")],
    reason: Annotated[str, typer.Option(help="snake_case reason")] = "manual",
    outcome: Annotated[str, typer.Option(help="manual|hard|soft|complaint|unsubscribe")] = "manual",
    stream: Annotated[str | None, typer.Option(help="Only this stream (default global)")] = None,
    days: Annotated[float | None, typer.Option(help="Expire after this many days")] = None,
    note: Annotated[str | None, typer.Option(help="Free text kept in the audit log")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Suppress an address by hand (never weakens an existing entry)."""
    from app.suppression import SuppressRequest, row_to_dict

    expires = datetime.now(UTC) + timedelta(days=days) if days else None

    async def go(s: Services) -> dict[str, Any]:
        result = await s.suppressions.suppress(
            SuppressRequest(
                address=address,
                outcome=outcome,
                reason=reason,
                source="cli",
                stream=stream,
                expires_at=expires,
                actor=CLI_ACTOR,
                note=note,
                event_kind="manual_suppress",
            )
        )
        return {"created": result.created, "changed": result.changed, **row_to_dict(result.row)}

    row = run(go)
    if as_json:
        dump(row)
    else:
        verb = "suppressed" if row["changed"] else "already suppressed (kept)"
        out.print(f"{row['address']}: {verb} {row['outcome']}/{row['reason']} ({row['scope']})")


def unsuppress(
    address: Annotated[str, typer.Argument(help="The address to remove from the list")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log)")],
    stream: Annotated[str | None, typer.Option(help="Only this scope; default all")] = None,
    force: Annotated[bool, typer.Option(help="Also remove complaint suppressions")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove an address's suppressions, with a reason (the CLI acts as admin)."""

    async def go(s: Services) -> list[dict[str, Any]]:
        return await s.suppressions.unsuppress(
            address,
            stream=stream,
            all_scopes=stream is None,
            reason=reason,
            actor=CLI_ACTOR,
            may_remove_complaints=force,
        )

    removed = run(go)
    if as_json:
        dump({"address": address, "removed": removed})
    else:
        for r in removed:
            out.print(f"removed {r['scope']} {r['outcome']}/{r['reason']}")


@cache_app.command("rebuild")
def cache_rebuild() -> None:
    """Reload the cache from the database and mark it ready (safe while serving)."""

    async def go(s: Services) -> int:
        return await s.suppressions.rebuild_cache(force=True)

    n = run(go)
    out.print(f"cache rebuilt: {n} active suppressions")


# ------------------------------------------------------------------------------------- bulk
