"""Support console benchmark: p95 of the pages support staff wait on, with 1,000,000 suppressions
on PostgreSQL, against a floor measured in the same run.

    python bench/console.py [--rows 1000000] [--requests 300]

Loads the rows (and one bounce event per address, twenty for the addresses searched) with COPY
into a database of its own, signs in to the console app (in process, through an ASGI client: no
network or server in the figures), then times, one request after another:
  * the floor: the sign-in page (a template rendered, no database)
  * search: /find?q=<address> (verdict + the history of an address with 21 events)
  * search of an address never seen (verdict + empty history)
  * the list's first page: no filter; outcome=complaint (1 % of rows); one domain; oldest first
Goal (issue 13): p95 < 100 ms for search, history and the first list page.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.container import build_services  # noqa: E402
from app.db import run_migrations  # noqa: E402
from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402

DB_NAME = "stoplist_bench_console"
OUTCOMES = ["hard"] * 80 + ["soft"] * 10 + ["unsubscribe"] * 9 + ["complaint"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def address(i: int) -> str:
    return f"user{i}@d{i % 5000}.example.com"


async def load(dsn: str, rows: int, searched: list[int]) -> float:
    conn = await asyncpg.connect(dsn)
    now = datetime.now(UTC)
    started = time.perf_counter()
    batch = 100_000
    for start in range(0, rows, batch):
        span = range(start, min(rows, start + batch))
        sups, events = [], []
        for i in span:
            outcome = OUTCOMES[i % len(OUTCOMES)]
            seen = now - timedelta(minutes=i % 43_200)
            scope = "marketing" if outcome == "unsubscribe" else "global"
            source = {"complaint": "complaint", "unsubscribe": "unsubscribe"}.get(outcome, "bounce")
            sups.append(
                (
                    address(i),
                    f"d{i % 5000}.example.com",
                    scope,
                    outcome,
                    "user_unknown",
                    source,
                    "{}",
                    False,
                    seen,
                    seen,
                    None,
                    1,
                    None,
                    1,
                    seen,
                )
            )
            events.append(
                (
                    seen,
                    address(i),
                    scope,
                    source,
                    outcome,
                    "user_unknown",
                    "text-user-unknown",
                    "5.1.1",
                    550,
                    "550 5.1.1 user unknown",
                    source,
                    None,
                    False,
                    None,
                    "{}",
                )
            )
        await conn.copy_records_to_table(
            "suppressions",
            records=sups,
            columns=[
                "address",
                "domain",
                "scope",
                "outcome",
                "reason",
                "source",
                "detail",
                "verified",
                "first_seen",
                "last_seen",
                "expires_at",
                "hit_count",
                "removed_at",
                "revision",
                "updated_at",
            ],
        )
        await conn.copy_records_to_table(
            "events",
            records=events,
            columns=[
                "created_at",
                "address",
                "scope",
                "kind",
                "outcome",
                "reason",
                "rule_id",
                "status",
                "reply_code",
                "diagnostic",
                "source",
                "actor",
                "verified",
                "message_id",
                "detail",
            ],
        )
    extra = [
        (
            now - timedelta(days=d),
            address(i),
            "global",
            "bounce",
            "soft",
            "mailbox_full",
            "text-mailbox-full",
            "4.2.2",
            452,
            "452 4.2.2 mailbox full",
            "bounce",
            None,
            False,
            None,
            "{}",
        )
        for i in searched
        for d in range(20)
    ]
    await conn.copy_records_to_table(
        "events",
        records=extra,
        columns=[
            "created_at",
            "address",
            "scope",
            "kind",
            "outcome",
            "reason",
            "rule_id",
            "status",
            "reply_code",
            "diagnostic",
            "source",
            "actor",
            "verified",
            "message_id",
            "detail",
        ],
    )
    await conn.execute("ANALYZE")
    await conn.close()
    return time.perf_counter() - started


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(client: httpx.AsyncClient, urls: list[str]) -> dict[str, float]:
    took = []
    for url in urls:
        t = time.perf_counter()
        r = await client.get(url)
        took.append((time.perf_counter() - t) * 1000)
        if r.status_code not in (200, 422):
            raise SystemExit(f"{url}: {r.status_code} {r.text[:300]}")
    return {
        "p50_ms": round(statistics.median(took), 2),
        "p95_ms": round(p(took, 0.95), 2),
        "max_ms": round(max(took), 2),
    }


async def measure(db_url: str, rows: int, searched: list[int], n: int) -> dict[str, Any]:
    settings = Settings(database_url=db_url, redis_url=None)
    services = build_services(settings)
    _, key = await services.keys.create("bench-console", "read", actor="bench")
    # No lifespan: the cache replica is not rebuilt (the console reads the database only).
    app = create_app(settings, services=services)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")
    form = await client.get("/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf
    r = await client.post("/signin", data={"key": key, "csrf": csrf.group(1)})
    assert r.status_code == 303, r.text
    rnd = random.Random(7)
    cases = {
        "floor: sign-in page": ["/signin"] * n,
        "search + history (21 events)": [
            f"/find?q={address(rnd.choice(searched))}" for _ in range(n)
        ],
        "search, address never seen": [f"/find?q=nobody{i}@nowhere.example" for i in range(n)],
        "list, first page": ["/list"] * n,
        "list, outcome=complaint": ["/list?outcome=complaint"] * n,
        "list, one domain": [f"/list?domain=d{rnd.randrange(5000)}.example.com" for _ in range(n)],
        "list, oldest first": ["/list?sort=oldest"] * n,
    }
    for urls in cases.values():  # warm up every path once
        await timed(client, urls[:5])
    out = {name: await timed(client, urls) for name, urls in cases.items()}
    floor = out["floor: sign-in page"]["p95_ms"]
    for figures in out.values():
        figures["p95_over_floor"] = round(figures["p95_ms"] / floor, 1)
    await client.aclose()
    await services.keys.close()
    await services.db.dispose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "console.json")
    args = ap.parse_args()
    base = args.pg.rsplit("/", 1)[0]
    db_url = f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{DB_NAME}"
    searched = random.Random(3).sample(range(args.rows), 100)

    async def recreate(drop_only: bool = False) -> None:
        admin = await asyncpg.connect(args.pg)
        await admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        if not drop_only:
            await admin.execute(f"CREATE DATABASE {DB_NAME}")
        await admin.close()

    asyncio.run(recreate())
    try:
        run_migrations(Settings(database_url=db_url))
        log(f"loading {args.rows:,} suppressions and their events with COPY")
        log(f"loaded in {asyncio.run(load(f'{base}/{DB_NAME}', args.rows, searched)):.0f} s")
        figures = asyncio.run(measure(db_url, args.rows, searched, args.requests))
    finally:
        asyncio.run(recreate(drop_only=True))
    result = {
        "rows": args.rows,
        "requests_per_case": args.requests,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "cases": figures,
    }
    print("| page | p50 ms | p95 ms | max ms | p95 / floor |")
    print("|---|---|---|---|---|")
    for name, f in figures.items():
        print(f"| {name} | {f['p50_ms']} | {f['p95_ms']} | {f['max_ms']} | {f['p95_over_floor']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
