"""What looking up the domain's key costs the pre-send check: the same checks through
``SuppressionService`` (Redis cache, in process) with the domain keys read, and with them
switched off, in alternating rounds of one run.

    python bench/check_domain_keys.py [--rounds 8] [--addresses 20000]

Single checks go 64 at a time (``check_one``: with the domain keys off it still asks for the
address alone); batches are 1,000 addresses over 50 domains (``check_many``). Needs Redis (a key
prefix of its own, removed at the end) and writes a SQLite file in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import app.suppression.lookup as lookup  # noqa: E402
from app.container import Services, build_services  # noqa: E402
from app.db import run_migrations  # noqa: E402
from app.settings import Settings  # noqa: E402


async def one_round(services: Services, n: int) -> tuple[float, float]:
    addresses = [f"user{i}@d{i % 50}.example.com" for i in range(n)]
    sup = services.suppressions
    started = time.perf_counter()
    for i in range(0, n, 64):
        await asyncio.gather(*(sup.check_one(a, None) for a in addresses[i : i + 64]))
    single = n / (time.perf_counter() - started)
    started = time.perf_counter()
    for i in range(0, n, 1000):
        await sup.check_many(addresses[i : i + 1000], None)
    return single, n / (time.perf_counter() - started)


async def main(rounds: int, n: int, redis_url: str) -> None:
    folder = tempfile.mkdtemp(prefix="stoplist-bench-")
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{folder}/bench.db",
        redis_url=redis_url,
        redis_prefix=f"bench-{uuid.uuid4().hex[:8]}:",
    )
    await asyncio.to_thread(run_migrations, settings)
    services = build_services(settings)
    await services.suppressions.rebuild_cache()
    real = lookup.domain_keys
    figures: dict[str, list[tuple[float, float]]] = {"domain keys read": [], "switched off": []}
    try:
        for _ in range(rounds):
            for label in figures:
                lookup.domain_keys = real if label == "domain keys read" else (lambda a: [])  # type: ignore[assignment]
                figures[label].append(await one_round(services, n))
    finally:
        lookup.domain_keys = real
        await services.cache.clear()
        await services.cache.close()
        await services.db.dispose()
    print("| | single checks/s | batch addresses/s |")
    print("|---|---|---|")
    for label, runs in figures.items():
        single = statistics.median(r[0] for r in runs)
        batch = statistics.median(r[1] for r in runs)
        print(f"| {label} | {single:,.0f} | {batch:,.0f} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--addresses", type=int, default=20_000)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    args = ap.parse_args()
    asyncio.run(main(args.rounds, args.addresses, args.redis))
