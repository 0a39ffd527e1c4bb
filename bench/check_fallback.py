"""The pre-send check's database fallback (Redis unreachable), in process on PostgreSQL: the read
as it was (a SQLAlchemy session: BEGIN, compiled statement, ORM-free rows, ROLLBACK) against the
read as it is (``Database.driver_read``: asyncpg's prepared statement, outside a transaction),
and the query alone on a plain asyncpg connection (the floor for the database part), in
alternating rounds of one run.

    python bench/check_fallback.py [--rows 1000000] [--rounds 6] [--batches 40] [--concurrency 8]

Batches are 1,000 addresses like ``bench/check_api.py``'s (half suppressed, 5,000 domains, so a
batch also reads ~900 domain keys); ``--concurrency`` batches run at once. ``check_many`` goes
through ``SuppressionLookup`` with a Redis that refuses connections, so every batch takes the
fallback as in production. Every answer is verified. Loads ``--rows`` suppressions into a database
of its own (dropped at the end unless ``--keep``; ``--reuse`` skips the load when it is there).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.cache import CachedEntry, Entries, RedisCache  # noqa: E402
from app.db import Database, run_migrations  # noqa: E402
from app.models import utcnow  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.suppression import repository  # noqa: E402
from app.suppression.lookup import SuppressionLookup  # noqa: E402
from app.suppression.model import make_entry, with_domain_keys  # noqa: E402
from bench.check_api import address, load_rows  # noqa: E402

DB_NAME = "stoplist_bench_fallback"


async def session_read(db: Database, addresses: Sequence[str]) -> list[Entries | None]:
    """The fallback's read before ``driver_read`` (``entries_from_db`` at 57e4713)."""
    found: dict[str, list[CachedEntry]] = {}
    async with db.read() as s:
        for addr, *columns in await repository.active_entry_rows(
            s, db.dialect, addresses, utcnow()
        ):
            found.setdefault(addr, []).append(make_entry(*columns))
    return [tuple(found[a]) if a in found else None for a in addresses]


async def prepare(pg: str, rows: int, reuse: bool) -> str:
    base = pg.rsplit("/", 1)[0]
    admin = await asyncpg.connect(pg)
    exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DB_NAME)
    if exists and reuse:
        await admin.close()
        conn = await asyncpg.connect(f"{base}/{DB_NAME}")
        have = await conn.fetchval("SELECT count(*) FROM suppressions")
        await conn.close()
        if have == rows:
            return f"{base}/{DB_NAME}"
        admin = await asyncpg.connect(pg)
    await admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {DB_NAME}")
    await admin.close()
    url = f"{base}/{DB_NAME}"
    await asyncio.to_thread(
        run_migrations,
        Settings(database_url=url.replace("postgresql://", "postgresql+asyncpg://")),
    )
    print(f"loading {rows:,} suppressions ...", flush=True)
    await load_rows(url, rows)
    conn = await asyncpg.connect(url)
    await conn.execute("VACUUM ANALYZE suppressions")
    await conn.close()
    return url


def verify(ids: Sequence[int], rows: int, answers: Sequence[Any]) -> int:
    """Wrong answers: address(i) is suppressed exactly when i < rows."""
    wrong = 0
    for i, ans in zip(ids, answers, strict=True):
        hit = ans["suppressed"] if isinstance(ans, dict) else ans is not None
        wrong += hit != (i < rows)
    return wrong


async def timed(
    run: Callable[[int], Awaitable[list[Any]]], n: int, concurrency: int
) -> tuple[float, float, list[list[Any]]]:
    """(addresses/s, CPU ms per batch of this process, results) over ``n`` batches."""
    out: list[list[Any]] = []
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, n, concurrency):
        out += await asyncio.gather(*(run(i) for i in range(start, min(n, start + concurrency))))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return n * 1000 / wall, cpu * 1000 / n, out


async def main(args: argparse.Namespace) -> None:
    url = await prepare(args.pg, args.rows, args.reuse)
    settings = Settings(
        database_url=url.replace("postgresql://", "postgresql+asyncpg://"),
        redis_url="redis://127.0.0.1:1/0",
        database_pool_size=args.pool_size,
    )
    db = Database(settings)
    lookup = SuppressionLookup(
        db, RedisCache(settings.redis_url or "", prefix="x:", timeout_s=0.5), auto_rebuild=False
    )
    floor = await asyncpg.connect(url)
    rnd = random.Random(7)
    ids = [[rnd.randrange(args.rows * 2) for _ in range(1000)] for _ in range(args.batches)]
    batches = [[address(i) for i in b] for b in ids]
    keyed = [with_domain_keys(b) for b in batches]
    now = utcnow()

    async def as_before(i: int) -> list[Any]:
        return (await session_read(db, keyed[i]))[:1000]

    async def as_now(i: int) -> list[Any]:
        return (await lookup.entries_from_db(keyed[i]))[:1000]

    async def query_alone(i: int) -> list[Any]:
        rows = await repository.active_entry_records(floor, keyed[i], now)
        found = {r[0] for r in rows}
        return [a if a in found else None for a in batches[i]]

    async def check(i: int) -> list[Any]:
        return await lookup.check_many(batches[i], None)

    paths: dict[str, Callable[[int], Awaitable[list[Any]]]] = {
        "read, SQLAlchemy session (before)": as_before,
        "read, driver_read (after)": as_now,
        "query alone, one asyncpg connection (floor)": query_alone,
        "check_many, session read (before)": check,
        "check_many, driver read (after)": check,
    }
    original = lookup.entries_from_db
    figures: dict[str, list[tuple[float, float]]] = {p: [] for p in paths}
    wrong = dict.fromkeys(paths, 0)
    conc = {p: (1 if "floor" in p else args.concurrency) for p in paths}
    for name, run in paths.items():  # warm every connection's statement cache
        await timed(run, min(args.batches, 2 * args.concurrency), conc[name])
    for _ in range(args.rounds):
        for name, run in paths.items():
            lookup.entries_from_db = (  # type: ignore[method-assign]
                (lambda a: session_read(db, a)) if "session read" in name else original
            )
            rate, cpu, out = await timed(run, args.batches, conc[name])
            figures[name].append((rate, cpu))
            wrong[name] += sum(verify(i, args.rows, o) for i, o in zip(ids, out, strict=True))
    lookup.entries_from_db = original  # type: ignore[method-assign]
    await floor.close()
    await db.dispose()
    print(f"load average {os.getloadavg()[0]:.1f} at the end; {args.rounds} rounds")
    print("| path | addresses/s (median) | CPU ms a batch, this process (median) | wrong |")
    print("|---|---|---|---|")
    for name, runs in figures.items():
        rate = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        print(f"| {name} | {rate:,.0f} | {cpu:.2f} | {wrong[name]} |")
    if not args.keep:
        admin = await asyncpg.connect(args.pg)
        await admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        await admin.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--pool-size", type=int, default=10)
    ap.add_argument("--keep", action="store_true", help="keep the loaded database")
    ap.add_argument("--reuse", action="store_true", help="reuse a kept database of --rows rows")
    asyncio.run(main(ap.parse_args()))
