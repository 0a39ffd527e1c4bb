"""Bulk import/export throughput on PostgreSQL + Redis, against a raw ``COPY`` floor.

    .venv/bin/python bench/bulk.py [--rows 1000000] [--keep]

One run: generate a CSV in the export format; time ``psql \\copy`` of it into a scratch table with
the same unique index (the floor); start ``stoplist serve`` on a fresh database and Redis prefix;
import the file through the API (httpx streaming upload), then, on emptied tables, through the
CLI; export everything through the API. Prints rows/s, the ratio to the floor and the service's
peak RSS (VmHWM) after each phase. Needs PostgreSQL (trust auth) and Redis on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KEY = "sl_" + "bulkbench" + "k" * 31  # the sl_ + 40 characters shape
OUTCOMES = [("hard", "user_unknown")] * 6 + [
    ("complaint", "complaint"),
    ("unsubscribe", "unsubscribe"),
    ("manual", "manual"),
    ("soft", "mailbox_full"),
]


def generate(path: Path, rows: int) -> None:
    rng = random.Random(42)
    now = datetime.now(UTC)
    with path.open("w", newline="") as out:
        out.write("address,outcome,reason,stream,expires_at,created_at,note\n")
        for i in range(rows):
            outcome, reason = OUTCOMES[i % len(OUTCOMES)]
            stream = "marketing" if outcome == "unsubscribe" else ""
            expires = ""
            if outcome == "soft":
                expires = (now + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            created = (now - timedelta(seconds=rng.randrange(86400 * 365))).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            )
            note = "imported from legacy list" if i % 50 == 0 else ""
            out.write(
                f"user{i}.{rng.randrange(10**6)}@d{i % 20000}.example.com,{outcome},{reason},"
                f"{stream},{expires},{created},{note}\n"
            )


def psql(db: str, sql: str) -> str:
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-qAtc", sql],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def floor(path: Path, db: str) -> float:
    psql(
        db,
        "DROP TABLE IF EXISTS bulk_floor; CREATE TABLE bulk_floor (address varchar(320), "
        "outcome varchar(16), reason varchar(48), stream varchar(64), expires_at timestamptz, "
        "created_at timestamptz, note text); "
        "CREATE UNIQUE INDEX ON bulk_floor (address, stream)",
    )
    psql(db, "CHECKPOINT")  # every timed phase starts without dirty buffers to flush
    started = time.perf_counter()
    psql(db, f"\\copy bulk_floor FROM '{path}' WITH (FORMAT csv, HEADER true)")
    took = time.perf_counter() - started
    psql(db, "DROP TABLE bulk_floor")
    return took


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def chunks(path: Path, size: int = 1 << 20):  # type: ignore[no-untyped-def]
    with path.open("rb") as f:
        while data := f.read(size):
            yield data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--db", default="stoplist_bench")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    ap.add_argument("--workdir", default="/tmp/stoplist-bulk-bench")
    ap.add_argument("--keep", action="store_true", help="keep the database and files")
    args = ap.parse_args()

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    csv_path = work / "suppressions.csv"
    t0 = time.perf_counter()
    generate(csv_path, args.rows)
    size_mb = csv_path.stat().st_size / 1e6
    print(f"generated {args.rows:,} rows ({size_mb:.0f} MB) in {time.perf_counter() - t0:.1f}s")

    psql("test", f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
    psql("test", f'CREATE DATABASE "{args.db}"')
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{args.db}"
    prefix = f"bulkbench-{os.getpid()}:"
    env = os.environ | {
        "STOPLIST_DATABASE_URL": url,
        "STOPLIST_REDIS_URL": args.redis,
        "STOPLIST_REDIS_PREFIX": prefix,
        "STOPLIST_BOOTSTRAP_ADMIN_KEY": KEY,
    }
    subprocess.run([BIN / "stoplist", "migrate"], env=env, check=True, capture_output=True)

    floor_s = floor(csv_path, args.db)
    floor_rps = args.rows / floor_s
    print(f"floor: psql \\copy into a table with the unique index: {floor_rps:,.0f} rows/s")

    port = free_port()
    log = (work / "serve.log").open("w")
    server = subprocess.Popen(
        [BIN / "stoplist", "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    results: dict[str, object] = {"rows": args.rows, "floor_rows_per_s": round(floor_rps)}
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(base + "/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=base, headers=headers, timeout=None) as client:
            psql(args.db, "CHECKPOINT")
            started = time.perf_counter()
            r = client.post(
                "/v1/suppressions/import",
                content=chunks(csv_path),
                headers={"Content-Type": "text/csv"},
            )
            took = time.perf_counter() - started
            r.raise_for_status()
            summary = r.json()
            assert summary["inserted"] == args.rows, summary
            api_rps = args.rows / took
            rss_import = vm_hwm_mb(server.pid)
            print(
                f"import via API: {api_rps:,.0f} rows/s ({took:.1f}s), "
                f"{api_rps / floor_rps:.0%} of raw COPY; service VmHWM {rss_import:.0f} MB"
            )
            results |= {
                "api_import_rows_per_s": round(api_rps),
                "api_import_ratio": round(api_rps / floor_rps, 3),
                "service_vmhwm_mb_after_import": round(rss_import),
            }

            # The same file again: idempotent, nothing written.
            started = time.perf_counter()
            r = client.post(
                "/v1/suppressions/import",
                content=chunks(csv_path),
                headers={"Content-Type": "text/csv"},
            )
            again = r.json()
            reimport_rps = args.rows / (time.perf_counter() - started)
            assert again["unchanged"] == args.rows, again
            print(f"re-import via API (all unchanged): {reimport_rps:,.0f} rows/s")
            results["api_reimport_rows_per_s"] = round(reimport_rps)

            started = time.perf_counter()
            lines = 0
            with client.stream("GET", "/v1/suppressions/export") as resp:
                resp.raise_for_status()
                for data in resp.iter_raw():
                    lines += data.count(b"\n")
            took = time.perf_counter() - started
            exported = lines - 1
            assert exported == args.rows, exported
            export_rps = exported / took
            rss_export = vm_hwm_mb(server.pid)
            print(
                f"export via API: {export_rps:,.0f} rows/s ({took:.1f}s); "
                f"service VmHWM {rss_export:.0f} MB"
            )
            results |= {
                "api_export_rows_per_s": round(export_rps),
                "service_vmhwm_mb_after_export": round(rss_export),
            }

        psql(args.db, "TRUNCATE suppressions, events RESTART IDENTITY")
        psql(args.db, "CHECKPOINT")
        started = time.perf_counter()
        out = subprocess.run(
            [BIN / "stoplist", "import", str(csv_path), "--json"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        took = time.perf_counter() - started
        summary = json.loads(out.stdout)
        assert summary["inserted"] == args.rows, summary
        cli_rps = args.rows / took
        cli_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(
            f"import via CLI: {cli_rps:,.0f} rows/s ({took:.1f}s wall, "
            f"{summary['duration_s']:.1f}s importing), {cli_rps / floor_rps:.0%} of raw COPY; "
            f"largest child RSS {cli_rss:.0f} MB"
        )
        results |= {
            "cli_import_rows_per_s": round(cli_rps),
            "cli_import_ratio": round(cli_rps / floor_rps, 3),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
        import redis

        client_r = redis.Redis.from_url(args.redis)
        batch: list[bytes] = []
        for key in client_r.scan_iter(match=prefix + "*", count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                client_r.unlink(*batch)
                batch.clear()
        if batch:
            client_r.unlink(*batch)
        client_r.close()
        if not args.keep:
            psql("test", f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
            shutil.rmtree(work, ignore_errors=True)
    results["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
