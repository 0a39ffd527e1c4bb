"""What the outbox costs the writer, per change: single-row changes through
``SuppressionService.suppress`` (what ``PUT /v1/suppressions/{address}`` runs) with no outbound
events made (the floor: ``for_history`` patched to make none), with them and no subscription,
with them and an (enabled) subscription, so the ``NOTIFY`` trigger fires, and the same with the
trigger disabled (``ALTER TABLE outbox DISABLE TRIGGER outbox_notify``), interleaved (A B C D A B
C D …, medians).

    .venv/bin/python bench/outbox_cost.py [--changes 2000] [--writers 1 16] [--rounds 3]
        [--pg-url URL]

One writer shows the time each variant adds to a change (µs per change, the transaction's
latency); 16 writers show the throughput with commits contending (``NOTIFY`` takes a lock
at commit that serialises the notifying transactions of the whole cluster). No delivery worker
(the subscription's deliveries are never made): this is the writer's side only. A fresh database, created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DB_NAME = "stoplist_bench_outbox_cost"
# A subscription no worker delivers to (its deliveries are never made: no worker sequences).
SUBSCRIBE = (
    "INSERT INTO webhook_subscriptions (url, secret, enabled, created_at, updated_at) "
    "VALUES ('https://receiver.example/hook', 'whsec_AAAA', true, now(), now())"
)

from app.container import build_services  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.suppression import SuppressRequest  # noqa: E402
from app.webhooks import outbox  # noqa: E402
from bench.scratch_db import create_scratch_database, drop_scratch_database  # noqa: E402


@contextlib.contextmanager
def without_outbox() -> Iterator[None]:
    """The writer as if there were no outbox: no outbound event is made (so none is written)."""
    real = outbox.for_history
    outbox.for_history = lambda *_, **__: []  # type: ignore[assignment]
    try:
        yield
    finally:
        outbox.for_history = real  # type: ignore[assignment]


async def write(services: Any, prefix: str, n: int, writers: int) -> float:
    """``n`` single-row changes by ``writers`` tasks; changes per second."""
    sup = services.suppressions
    next_index = 0

    async def one() -> None:
        nonlocal next_index
        while next_index < n:
            i = next_index
            next_index += 1
            await sup.suppress(SuppressRequest(f"{prefix}{i}@example.com", "hard", "x", "api"))

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(writers)))
    return n / (time.perf_counter() - start)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = await create_scratch_database(args.pg_url, DB_NAME)
    services = build_services(Settings(database_url=url, redis_url=None))
    await services.suppressions.rebuild_cache()
    raw = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    variants = ("no_outbox", "outbox", "outbox_subscribed", "outbox_subscribed_no_notify")
    result: dict[str, Any] = {}
    try:
        await write(services, "warm-", 200, 4)
        for writers in args.writers:
            rates: dict[str, list[float]] = {k: [] for k in variants}
            for r in range(args.rounds):
                tag = f"{writers}-{r}-"
                with without_outbox():
                    rates["no_outbox"].append(
                        await write(services, "f" + tag, args.changes, writers)
                    )
                rates["outbox"].append(await write(services, "o" + tag, args.changes, writers))
                await raw.execute(SUBSCRIBE)
                try:
                    rates["outbox_subscribed"].append(
                        await write(services, "s" + tag, args.changes, writers)
                    )
                    await raw.execute("ALTER TABLE outbox DISABLE TRIGGER outbox_notify")
                    try:
                        rates["outbox_subscribed_no_notify"].append(
                            await write(services, "n" + tag, args.changes, writers)
                        )
                    finally:
                        await raw.execute("ALTER TABLE outbox ENABLE TRIGGER outbox_notify")
                finally:
                    await raw.execute("DELETE FROM webhook_subscriptions")
            med = {k: statistics.median(v) for k, v in rates.items()}
            result[f"writers_{writers}"] = {
                "changes_per_s": {k: round(v) for k, v in med.items()},
                "us_per_change": {k: round(writers * 1e6 / v) for k, v in med.items()},
                "vs_floor_pct": {
                    k: round(100 * (med[k] / med["no_outbox"] - 1), 1) for k in variants[1:]
                },
                "rounds": {k: [round(x) for x in v] for k, v in rates.items()},
            }
            print(writers, result[f"writers_{writers}"], file=sys.stderr, flush=True)
    finally:
        await raw.close()
        await services.db.dispose()
        await drop_scratch_database(args.pg_url, DB_NAME)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=2000)
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
