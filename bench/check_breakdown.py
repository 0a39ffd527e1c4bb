"""Where a batch check's time goes, per address: ``POST /v1/check`` with 1,000 addresses (half
suppressed) timed stage by stage in process, on the Redis cache, beside the whole request through
the ASGI app and the bare endpoint of ``bench/bare_app.py`` (the floor) in the same run.

    python bench/check_breakdown.py [--rounds 7] [--requests 200] [--batch 1000]

Stages, in the order the route runs them: parsing the JSON body, normalising the addresses, the
domain keys, the cache round trip (one MGET of address and domain keys, decoding the hits),
deciding each answer and building the dicts, serialising the answer. "whole request" runs the
route through Starlette with an API key (auth, metrics and the ASGI hop included). Each figure is
the median over rounds of µs per address. Needs Redis (a key prefix of its own, removed at the
end); the API keys live in a SQLite file in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.addresses import try_normalise_many  # noqa: E402
from app.cache import CachedEntry  # noqa: E402
from app.container import Services, build_services  # noqa: E402
from app.db import run_migrations  # noqa: E402
from app.http.app import build_http_app  # noqa: E402
from app.http.routes.check import _parse_batch  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.suppression.model import domain_keys, scope_for  # noqa: E402
from bench.bare_app import app as bare_app  # noqa: E402

KEY = "sl_" + "breakdownbreakdownbreakdownbreakdown0000"[:40]


def address(i: int) -> str:
    return f"user{i}@d{i % 5000}.example.com"


async def asgi_post(app: Any, body: bytes, path: str, key: str | None) -> bytes:
    """One POST through an ASGI app, no network: the answer's body."""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if key:
        headers.append((b"authorization", b"Bearer " + key.encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "server": ("127.0.0.1", 8025),
        "client": ("127.0.0.1", 40000),
        "root_path": "",
        "state": {},
    }
    sent = False
    chunks: list[bytes] = []
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    if status != [200]:
        raise RuntimeError(f"{path}: {status} {b''.join(chunks)[:200]!r}")
    return b"".join(chunks)


async def timed(n: int, fn: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await fn()
    return time.perf_counter() - started


async def stages(services: Services, body: bytes, requests: int) -> dict[str, float]:
    """Seconds for ``requests`` runs of each stage of the batch route, on the same body."""
    sup = services.suppressions
    addresses, stream = _parse_batch(body, 10_000)
    scope = scope_for(stream)
    normalised = try_normalise_many(addresses)
    valid = [n for n in normalised if n is not None]
    domains = domain_keys(valid)
    keys = [*valid, *domains]
    results = await sup.check_many(addresses, stream)
    wrong = [r for i, r in enumerate(results) if r["suppressed"] is not (i % 2 == 0)]
    if wrong:
        raise SystemExit(f"{len(wrong)} wrong answers, e.g. {wrong[0]}")
    out: dict[str, float] = {}

    async def parse() -> None:
        _parse_batch(body, 10_000)

    async def normalise() -> None:
        try_normalise_many(addresses)

    async def domain() -> None:
        domain_keys(valid)

    async def cache() -> None:
        await sup.lookup_entries(keys)

    async def whole_check() -> None:
        await sup.check_many(addresses, scope)

    async def dumps() -> None:
        orjson.dumps({"results": results}, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)

    for name, fn in [
        ("parse body", parse),
        ("normalise", normalise),
        ("domain keys", domain),
        ("cache round trip", cache),
        ("check_many (all of the lookup)", whole_check),
        ("serialise answer", dumps),
    ]:
        out[name] = await timed(requests, fn)
    return out


async def main(rounds: int, requests: int, batch: int, redis_url: str) -> None:
    folder = tempfile.mkdtemp(prefix="stoplist-bench-")
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{folder}/bench.db",
        redis_url=redis_url,
        redis_prefix=f"bench-{uuid.uuid4().hex[:8]}:",
        bootstrap_admin_key=KEY,
    )
    await asyncio.to_thread(run_migrations, settings)
    services = build_services(settings)
    app = build_http_app(services=services)
    ids = list(range(0, 2 * batch))
    addresses = [address(i) for i in ids[::2]]  # the addresses checked
    hit = CachedEntry(
        "global", "hard", "user_unknown", "2026-12-06T00:00:00Z", None, None, False, "bounce"
    )
    await services.keys.ensure_bootstrap(KEY)
    await services.suppressions.rebuild_cache()
    await services.cache.put_many((a, 1, [hit]) for a in addresses[::2])  # half suppressed
    body = orjson.dumps({"addresses": addresses})
    per: dict[str, list[float]] = {}
    try:
        await asgi_post(app, body, "/v1/check", KEY)  # warm (and check the key works)
        for _ in range(rounds):
            figures = await stages(services, body, requests)
            figures["whole request (ASGI, auth)"] = await timed(
                requests, lambda: asgi_post(app, body, "/v1/check", KEY)
            )
            figures["bare endpoint (floor)"] = await timed(
                requests, lambda: asgi_post(bare_app, body, "/check", None)
            )
            for name, seconds in figures.items():
                per.setdefault(name, []).append(seconds / requests / batch * 1e6)
    finally:
        await services.cache.clear()
        await services.cache.close()
        await services.db.dispose()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"| stage ({batch:,} addresses a request, half suppressed) | µs per address |")
    print("|---|---|")
    for name, values in per.items():
        print(f"| {name} | {statistics.median(values):.2f} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    args = ap.parse_args()
    asyncio.run(main(args.rounds, args.requests, args.batch, args.redis))
