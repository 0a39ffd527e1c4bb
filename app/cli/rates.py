"""``stoplist rates``: the deliverability rate buckets (app.rates)."""

from __future__ import annotations

import typer

from app.cli.common import JsonOpt, dump, out, run
from app.container import Services

rates_app = typer.Typer(help="Deliverability rate buckets.", no_args_is_help=True)


@rates_app.command("rollup")
def rollup(as_json: JsonOpt = False) -> None:
    """Apply the retention of the rate buckets once (what `serve` does periodically).

    The hourly and daily roll-ups are written with every batch of events, so they are always
    complete; this deletes the 5-minute, hourly and daily buckets past STOPLIST_RATES_5MIN_DAYS,
    STOPLIST_RATES_HOURLY_DAYS and STOPLIST_RATES_DAILY_DAYS."""
    from app.rates import prune

    async def go(s: Services) -> dict[str, int]:
        return await prune(s.db, s.settings)

    deleted = run(go)
    if as_json:
        dump({"deleted": deleted})
        return
    for grain, n in deleted.items():
        out.print(f"{grain}: {n} bucket(s) past retention deleted")
