"""PostgreSQL storage per 1,000,000 suppressions, events and stored messages, for the capacity
table in docs/deployment.md.

    .venv/bin/python bench/storage_size.py --suppressions 1000000 --events 1000000 --messages 100000

A fresh database at the latest schema (``stoplist migrate``) is loaded by ``COPY`` with rows
shaped as the service writes them: suppressions as ``bench/check_api.py`` loads them (a hard
bounce, ``{}`` detail); events as the intake writes a hard bounce from
``samples/bounce/postfix-01.eml`` (rule, status, reply code, diagnostic, a JSON detail with the
remote MTA, action and stream); stored messages (``inbound_messages``) with that sample's bytes as
``raw``. After ``VACUUM ANALYZE`` it prints ``pg_total_relation_size`` (table + indexes + TOAST)
of each table and the size per 1,000,000 rows. The database is dropped at the end (``--keep``
leaves it).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from check_api import load_rows

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DB_NAME = "stoplist_storage"
RAW = (ROOT / "samples" / "bounce" / "postfix-01.eml").read_bytes()
BATCH = 100_000
EVENT_COLUMNS = [
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
]
MESSAGE_COLUMNS = [
    "received_at",
    "digest",
    "peer",
    "mail_from",
    "rcpt_to",
    "size",
    "raw",
    "state",
    "kind",
    "processed_at",
    "attempts",
    "verified",
    "summary",
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def bounced(i: int) -> str:
    return f"user{i}@d{i % 5000}.example.com"


def event_row(i: int, now: datetime) -> tuple[object, ...]:
    address = bounced(i)
    detail = {"remote_mta": "mx.example.net", "action": "failed", "stream": "newsletter"}
    return (
        now,
        address,
        "global",
        "bounce",
        "hard",
        "user_unknown",
        "text-user-unknown",
        "5.1.1",
        550,
        f"550 5.1.1 <{address}>: Recipient address rejected: User unknown",
        "bounce",
        None,
        True,
        i + 1,
        json.dumps(detail),
    )


def message_row(i: int, now: datetime) -> tuple[object, ...]:
    raw = RAW.replace(b"carol@example.net", bounced(i).encode())
    summary = {"kind": "bounce", "recipients": [{"address": bounced(i), "outcome": "hard"}]}
    return (
        now,
        hashlib.sha256(raw).hexdigest(),
        "192.0.2.10",
        "",
        json.dumps(["bounce+x=example.net@bounces.example.net"]),
        len(raw),
        raw,
        "processed",
        "bounce",
        now,
        1,
        True,
        json.dumps(summary),
    )


async def load(dsn: str, table: str, columns: list[str], rows: int, make: object) -> None:
    conn = await asyncpg.connect(dsn)
    now = datetime.now(UTC)
    try:
        for start in range(0, rows, BATCH):
            records = [make(i, now) for i in range(start, min(rows, start + BATCH))]  # type: ignore[operator]
            await conn.copy_records_to_table(table, records=records, columns=columns)
    finally:
        await conn.close()


async def sizes(dsn: str, tables: list[str]) -> dict[str, tuple[int, int, int]]:
    """{table: (rows, total bytes, index bytes)} after VACUUM ANALYZE."""
    conn = await asyncpg.connect(dsn)
    try:
        out = {}
        for table in tables:
            await conn.execute(f"VACUUM ANALYZE {table}")
            rows = await conn.fetchval(f"SELECT count(*) FROM {table}")
            total = await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", table)
            index = await conn.fetchval("SELECT pg_indexes_size($1::regclass)", table)
            out[table] = (rows, total, index)
        return out
    finally:
        await conn.close()


async def admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--suppressions", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument(
        "--pg-url",
        default=os.environ.get("STOPLIST_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    admin_url = args.pg_url.replace("postgresql+asyncpg://", "postgresql://")
    dsn = f"{admin_url.rsplit('/', 1)[0]}/{DB_NAME}"
    asyncio.run(admin(admin_url, f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
    asyncio.run(admin(admin_url, f'CREATE DATABASE "{DB_NAME}"'))
    try:
        env = {
            **os.environ,
            "STOPLIST_DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://"),
        }
        subprocess.run([str(BIN / "stoplist"), "migrate"], env=env, check=True, capture_output=True)
        log(f"loading {args.suppressions:,} suppressions")
        asyncio.run(load_rows(dsn, args.suppressions))
        log(f"loading {args.events:,} events")
        asyncio.run(load(dsn, "events", EVENT_COLUMNS, args.events, event_row))
        log(f"loading {args.messages:,} stored messages ({len(RAW):,} bytes each)")
        asyncio.run(load(dsn, "inbound_messages", MESSAGE_COLUMNS, args.messages, message_row))
        found = asyncio.run(sizes(dsn, ["suppressions", "events", "inbound_messages"]))
    finally:
        if not args.keep:
            asyncio.run(admin(admin_url, f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
    print(f"\n{'table':<18} {'rows':>10} {'total MB':>9} {'indexes MB':>11} {'MB per 1M rows':>15}")
    for table, (rows, total, index) in found.items():
        per_m = total / rows * 1_000_000 / 2**20 if rows else float("nan")
        print(
            f"{table:<18} {rows:>10,} {total / 2**20:>9.0f} {index / 2**20:>11.0f} {per_m:>15.0f}"
        )


if __name__ == "__main__":
    main()
