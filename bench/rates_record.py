"""Cost of counting the deliverability rates in the transaction that records the events.

usage: python bench/rates_record.py [--pg-url URL] [--batches N] [--batch-size B]

Builds N batches of B synthetic events (90 % delivered, 10 % bounces; five providers, three
streams, four sending IPs / vmtas; a minute of times per batch, as a webhook batch or a slice of
an accounting file), in a fresh PostgreSQL database migrated to head, and times in the same run:

- floor: one transaction per batch inserting its events as rows (a table as wide as what the
  event store keeps) and committing: what recording the events costs at least;
- ours: the same, plus ``app.rates.record_events`` in the same transaction.

Prints events/s of each and ours as a share of the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy import Column, DateTime, MetaData, String, Table, Text

from app.db import Database, run_migrations
from app.rates import record_events
from app.settings import Settings
from events.model import Event, EventKind, Source

DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "icloud.com", "example.net"]
OUTCOMES = ["hard", "soft", "policy"]
BENCH = Table(
    "bench_events",
    MetaData(),
    Column("recipient", String(320)),
    Column("kind", String(16)),
    Column("outcome", String(16)),
    Column("stream", String(64)),
    Column("ip", String(45)),
    Column("vmta", String(64)),
    Column("diagnostic", Text),
    Column("time", DateTime(timezone=True)),
)


def batches(n: int, size: int) -> list[list[Event]]:
    rng = random.Random(12)
    start = datetime(2026, 12, 1, tzinfo=UTC)
    out = []
    for b in range(n):
        batch = []
        for i in range(size):
            bounce = rng.random() < 0.1
            k = rng.randrange(4)
            batch.append(
                Event(
                    source=Source.PMTA,
                    kind=EventKind.BOUNCE if bounce else EventKind.DELIVERED,
                    recipient=f"u{b}x{i}@{rng.choice(DOMAINS)}",
                    outcome=rng.choice(OUTCOMES) if bounce else "none",
                    reason="x",
                    rule_id="x",
                    dedupe_id=f"{b}-{i}",
                    location=f"bench:{i}",
                    time=start + timedelta(minutes=b, seconds=i * 60 / size),
                    stream=f"stream{rng.randrange(3)}",
                    ip=f"192.0.2.{k}",
                    vmta=f"vmta-{k}",
                    diagnostic="550 5.1.1 user unknown" if bounce else "",
                )
            )
        out.append(batch)
    return out


def rows(batch: list[Event]) -> list[dict[str, object]]:
    return [
        {
            "recipient": e.recipient,
            "kind": e.kind.value,
            "outcome": e.outcome,
            "stream": e.stream,
            "ip": e.ip,
            "vmta": e.vmta,
            "diagnostic": e.diagnostic,
            "time": e.time,
        }
        for e in batch
    ]


async def run(db: Database, work: list[list[Event]], *, rates: bool) -> float:
    began = time.perf_counter()
    for batch in work:
        async with db.write() as s:
            await s.execute(BENCH.insert(), rows(batch))
            if rates:
                await record_events(await s.connection(), batch)
    return sum(len(b) for b in work) / (time.perf_counter() - began)


async def main(url: str, n: int, size: int) -> None:
    admin = url.replace("postgresql+asyncpg://", "postgresql://")
    name = "stoplist_bench_rates"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    target = f"{url.rsplit('/', 1)[0]}/{name}"
    try:
        await asyncio.to_thread(run_migrations, Settings(database_url=target))
        db = Database(Settings(database_url=target))
        async with db.engine.begin() as c:
            await c.run_sync(BENCH.metadata.create_all)
        work = batches(n, size)
        await run(db, work[:2], rates=True)  # warm up connections and statement caches
        results = {"floor": [], "ours": []}
        for _ in range(3):  # interleaved, best of three: the machine is shared
            results["floor"].append(await run(db, work, rates=False))
            results["ours"].append(await run(db, work, rates=True))
        floor, ours = max(results["floor"]), max(results["ours"])
        print(f"floor (insert + commit):        {floor:10,.0f} events/s")
        print(f"ours  (+ record_events):        {ours:10,.0f} events/s")
        print(f"ours / floor:                   {ours / floor:10.0%}")
        await db.dispose()
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(main(args.pg_url, args.batches, args.batch_size))
