"""Pre-send check benchmark: `stoplist serve` on PostgreSQL + Redis with 1,000,000 suppressions,
against a bare FastAPI endpoint served the same way (the floor), in one run.

    python bench/check_api.py [--rows 1000000] [--duration 15] [--connections 64]

Needs PostgreSQL, Redis and `wrk` (Debian: `apt-get install wrk`). Everything stays on loopback.
Measures:
  * GET /v1/check (single address): requests/s, p50/p99, ratio to the bare endpoint
  * POST /v1/check with 1,000 addresses: addresses/s, ratio to the bare JSON endpoint
  * the same two with Redis unreachable (database fallback), and that every answer is still right
Half of the checked addresses are suppressed, half are not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KEY = "sl_" + "benchmarkbenchmarkbenchmarkbenchmark0000"[:40]
DB_NAME = "stoplist_bench"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def address(i: int) -> str:
    return f"user{i}@d{i % 5000}.example.com"


async def load_rows(dsn: str, rows: int) -> float:
    conn = await asyncpg.connect(dsn)
    now = datetime.now(UTC)
    started = time.perf_counter()
    batch = 100_000
    for start in range(0, rows, batch):
        records = [
            (
                address(i),
                f"d{i % 5000}.example.com",
                "global",
                "hard",
                "user_unknown",
                "bounce",
                "{}",
                False,
                now,
                now,
                None,
                1,
                None,
                1,
                now,
            )
            for i in range(start, min(rows, start + batch))
        ]
        await conn.copy_records_to_table(
            "suppressions",
            records=records,
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
    await conn.execute("ANALYZE suppressions")
    await conn.close()
    return time.perf_counter() - started


def wait_http(url: str, predicate: Any = None, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, timeout=2)
            last = r.json()
            if predicate is None or predicate(last):
                return dict(last)
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} not ready: {last}")


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def wrk(url: str, script: Path, duration: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    lat: dict[str, float] = {}
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out)
        if m:
            value = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
            lat[pct] = value
    return {
        "rps": rps,
        "p50_ms": lat.get("50", float("nan")),
        "p99_ms": lat.get("99", float("nan")),
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
    }


def lua_get(path: str, rows: int, auth: bool) -> str:
    header = f'wrk.headers["Authorization"] = "Bearer {KEY}"\n' if auth else ""
    return (
        header
        + f"""
math.randomseed(42)
request = function()
  local i = math.random(0, {rows * 2 - 1})
  return wrk.format("GET", "{path}?address=user" .. i .. "@d" .. (i % 5000) .. ".example.com")
end
"""
    )


def lua_post(path: str, rows: int, auth: bool, batch: int) -> str:
    rnd = random.Random(7)
    addresses = [address(rnd.randrange(rows * 2)) for _ in range(batch)]
    body = json.dumps({"addresses": addresses})
    header = f'wrk.headers["Authorization"] = "Bearer {KEY}"\n' if auth else ""
    return header + (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [[{body}]]\n"
        f'wrk.path = "{path}"\n'
    )


def verify_answers(base: str, rows: int, samples: int = 2000) -> int:
    """Every answer right: i < rows is suppressed, i >= rows is not. Returns wrong answers."""
    rnd = random.Random(99)
    ids = [rnd.randrange(rows * 2) for _ in range(samples)]
    wrong = 0
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}) as c:
        for start in range(0, samples, 1000):
            chunk = ids[start : start + 1000]
            r = c.post("/v1/check", json={"addresses": [address(i) for i in chunk]}, timeout=30)
            r.raise_for_status()
            for i, res in zip(chunk, r.json()["results"], strict=True):
                wrong += res["suppressed"] != (i < rows)
        for i in ids[:200]:
            r = c.get("/v1/check", params={"address": address(i)}, timeout=10)
            wrong += r.json()["suppressed"] != (i < rows)
    return wrong


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "check_api.json")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed (Debian: apt-get install wrk)")

    async def prepare() -> float:
        admin = await asyncpg.connect(args.pg)
        await admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {DB_NAME}")
        await admin.close()
        return 0.0

    asyncio.run(prepare())
    pg_base = args.pg.rsplit("/", 1)[0]
    db_url = f"{pg_base.replace('postgresql://', 'postgresql+asyncpg://')}/{DB_NAME}"
    env = {
        **os.environ,
        "STOPLIST_DATABASE_URL": db_url,
        "STOPLIST_REDIS_URL": args.redis,
        "STOPLIST_BOOTSTRAP_ADMIN_KEY": KEY,
    }
    subprocess.run([str(BIN / "stoplist"), "migrate"], env=env, check=True, cwd=ROOT)
    log(f"loading {args.rows:,} suppressions with COPY")
    load_s = asyncio.run(load_rows(f"{pg_base}/{DB_NAME}", args.rows))
    log(f"loaded in {load_s:.1f}s")
    redis.Redis.from_url(args.redis).flushdb()

    results: dict[str, Any] = {
        "rows": args.rows,
        "connections": args.connections,
        "duration_s": args.duration,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        scripts = {
            "bare_get": lua_get("/check", args.rows, auth=False),
            "bare_post": lua_post("/check", args.rows, auth=False, batch=args.batch),
            "get": lua_get("/v1/check", args.rows, auth=True),
            "post": lua_post("/v1/check", args.rows, auth=True, batch=args.batch),
        }
        for name, body in scripts.items():
            (t / f"{name}.lua").write_text(body)

        # The floor: bare FastAPI, served the same way.
        bare = start(
            [
                str(BIN / "uvicorn"),
                "bench.bare_app:app",
                "--port",
                "8202",
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env,
        )
        wait_http("http://127.0.0.1:8202/check?address=x@example.com")
        log("floor: bare GET")
        results["bare_get"] = wrk(
            "http://127.0.0.1:8202", t / "bare_get.lua", args.duration, args.connections
        )
        log("floor: bare POST")
        results["bare_post"] = wrk(
            "http://127.0.0.1:8202", t / "bare_post.lua", args.duration, args.connections
        )
        stop(bare)

        # Stoplist on PostgreSQL + Redis.
        started = time.perf_counter()
        svc = start(
            [
                str(BIN / "stoplist"),
                "serve",
                "--port",
                "8201",
                "--no-migrate",
                "--log-level",
                "warning",
            ],
            env,
        )
        wait_http("http://127.0.0.1:8201/readyz", lambda r: r.get("cache") == "ok")
        results["cache_rebuild_s"] = round(time.perf_counter() - started, 1)
        log(f"cache warm after {results['cache_rebuild_s']}s")
        info = redis.Redis.from_url(args.redis).info("memory")
        results["redis_used_memory_mb"] = round(int(info["used_memory"]) / 2**20, 1)
        results["wrong_answers_redis"] = verify_answers("http://127.0.0.1:8201", args.rows)
        log("stoplist GET /v1/check")
        results["get"] = wrk(
            "http://127.0.0.1:8201", t / "get.lua", args.duration, args.connections
        )
        log("stoplist POST /v1/check")
        results["post"] = wrk(
            "http://127.0.0.1:8201", t / "post.lua", args.duration, args.connections
        )
        stop(svc)

        # Redis unreachable: database fallback.
        env_down = {**env, "STOPLIST_REDIS_URL": "redis://127.0.0.1:1/0"}
        svc = start(
            [
                str(BIN / "stoplist"),
                "serve",
                "--port",
                "8203",
                "--no-migrate",
                "--log-level",
                "error",
            ],
            env_down,
        )
        wait_http("http://127.0.0.1:8203/readyz", lambda r: r.get("status") == "degraded")
        results["wrong_answers_db"] = verify_answers("http://127.0.0.1:8203", args.rows)
        log("fallback GET /v1/check")
        results["get_db"] = wrk(
            "http://127.0.0.1:8203", t / "get.lua", args.duration, args.connections
        )
        log("fallback POST /v1/check")
        results["post_db"] = wrk(
            "http://127.0.0.1:8203", t / "post.lua", args.duration, args.connections
        )
        stop(svc)

    b = args.batch
    g, bg, p, bp = results["get"], results["bare_get"], results["post"], results["bare_post"]
    gd, pd = results["get_db"], results["post_db"]
    print()
    print(
        f"machine: {results['machine']}; {args.rows:,} suppressions; {args.connections} connections; wrk -t2 -d{args.duration}s"
    )
    print(f"{'':34}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'addr/s':>12}{'errors':>8}")
    for label, r, n in [
        ("bare GET (floor)", bg, 1),
        ("GET /v1/check, Redis", g, 1),
        ("GET /v1/check, DB fallback", gd, 1),
        (f"bare POST {b} (floor)", bp, b),
        (f"POST /v1/check {b}, Redis", p, b),
        (f"POST /v1/check {b}, DB fallback", pd, b),
    ]:
        print(
            f"{label:34}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['rps'] * n:>12.0f}{r['errors']:>8.0f}"
        )
    print()
    print(
        f"single check: {g['rps'] / bg['rps']:.0%} of the floor's requests/s (goal >= 60%), p99 {g['p99_ms']:.1f} ms (goal <= 20 ms)"
    )
    print(
        f"batch check: {p['rps'] * b:,.0f} addresses/s (goal >= 300,000), {p['rps'] / bp['rps']:.0%} of the JSON floor"
    )
    print(f"DB fallback: single {gd['rps']:.0f} req/s, batch {pd['rps'] * b:,.0f} addresses/s")
    print(
        f"wrong answers: {results['wrong_answers_redis']} with Redis, {results['wrong_answers_db']} on the DB fallback"
    )
    print(
        f"cache rebuild of {args.rows:,} rows at start-up: {results['cache_rebuild_s']} s; "
        f"Redis used memory {results['redis_used_memory_mb']} MB"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    redis.Redis.from_url(args.redis).flushdb()  # the benchmark's own database: leave it empty
    asyncio.run(_drop_database(args.pg))


async def _drop_database(pg: str) -> None:
    admin = await asyncpg.connect(pg)
    await admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    await admin.close()


if __name__ == "__main__":
    main()
