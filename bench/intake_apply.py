"""The apply step of the intake alone: parsed messages through ``app.feedback.apply_batch``.

    .venv/bin/python bench/intake_apply.py [--messages 8000] [--batch 32] [--concurrency 4]

On a fresh PostgreSQL database (migrated to head) and Redis: the messages of
``bench/intake_e2e.py`` (hard-bounce DSNs, every ``--complaint-every``-th an RFC 5965 abuse report,
one distinct recipient each) are parsed once up front, then applied in batches of ``--batch`` by
``--concurrency`` tasks on one event loop, as the intake's processing child does (one transaction
per batch, the cache written through after each commit). Prints wall time and the process's CPU
time per message; with ``--profile`` the top functions under cProfile. The first ``--warmup``
messages are applied before timing starts (pool connections, statement caches). The run fails if a
recipient is not suppressed as expected afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from intake_e2e import bounce_address, complaint_address, is_complaint, message  # noqa: E402


async def _admin(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def run(args: argparse.Namespace, db_url: str) -> None:
    from app.container import build_services
    from app.feedback import BatchItem, Envelope, apply_batch
    from app.settings import Settings
    from dsn.analysis import analyse_message

    n, every = args.messages + args.warmup, args.complaint_every
    items = []
    for i in range(n):
        mail_from, rcpt, raw = message(i, every)
        analysis = analyse_message(raw, envelope_rcpt=rcpt.decode())
        envelope = Envelope(mail_from=mail_from.decode(), rcpt_to=[rcpt.decode()], peer=None)
        items.append(BatchItem(i + 1, analysis, envelope))
    settings = Settings(
        database_url=db_url,
        redis_url=args.redis_url,
        redis_prefix=f"benchapply{os.getpid()}:",
        smtp_domains=["bounces.example.net", "fbl@feedback.example.net"],
    )
    services = build_services(settings)
    await services.suppressions.rebuild_cache()
    batches = [items[i : i + args.batch] for i in range(0, len(items), args.batch)]
    warm = args.warmup // args.batch
    for b in batches[:warm]:
        await apply_batch(services, b)
    todo = batches[warm:]
    timed = sum(len(b) for b in todo)

    async def worker() -> None:
        while todo:
            await apply_batch(services, todo.pop(0))

    profiler = cProfile.Profile() if args.profile else None
    cpu, wall = time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    if profiler:
        profiler.disable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(
        f"  applied {timed} messages in {wall:.2f} s: {timed / wall:.0f}/s, "
        f"{wall / timed * 1e6:.0f} µs wall and {cpu / timed * 1e6:.0f} µs CPU (this process) "
        "per message"
    )
    async with services.db.read() as s:
        from sqlalchemy import text

        rows = (await s.execute(text("SELECT address, outcome FROM suppressions"))).all()
    got = {a: o for a, o in rows}
    misses = [
        i
        for i in range(n)
        if got.get(complaint_address(i) if is_complaint(i, every) else bounce_address(i))
        != ("complaint" if is_complaint(i, every) else "hard")
    ]
    await services.cache.clear()
    await services.cache.close()
    await services.db.dispose()
    if profiler:
        stats = pstats.Stats(profiler).sort_stats(args.sort)
        stats.print_stats(args.top)
        if args.callers:
            stats.print_callers(args.callers)
    if misses:
        sys.exit(f"{len(misses)} recipients not suppressed as expected, e.g. message {misses[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=8000)
    parser.add_argument("--warmup", type=int, default=320)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--complaint-every", type=int, default=10)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "STOPLIST_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--callers", help="also print the callers of functions matching this")
    args = parser.parse_args()

    from app.db import run_migrations
    from app.settings import Settings

    name = f"stoplist_bench_apply_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    db_url = f"{args.pg_url.rsplit('/', 1)[0]}/{name}"
    asyncio.run(_admin(args.pg_url, f'CREATE DATABASE "{name}"'))
    try:
        run_migrations(Settings(database_url=db_url))
        asyncio.run(run(args, db_url))
    finally:
        asyncio.run(_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
