"""Two ``stoplist serve`` processes on one PostgreSQL and one Redis (and the same through PgBouncer
and a Redis Cluster): the same answers from both, and a change made on one is visible on the other
as soon as it has been answered (the write-through to the shared cache precedes the answer)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.keys.model import generate_key
from tests.conftest import PG_ADMIN_URL, REDIS_URL, REQUIRE
from tests.servers import PgBouncer, RedisClusterServers, free_port

pytestmark = pytest.mark.slow


def _admin(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def _serve(tmp_path: Path, env: dict[str, str], name: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with (tmp_path / f"{name}.log").open("wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "stoplist"), "serve"],
            cwd=tmp_path,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "STOPLIST_HTTP_PORT": str(port),
                **env,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{name} did not start:\n{(tmp_path / f'{name}.log').read_text()}")
        time.sleep(0.2)


@pytest.fixture(params=["redis", "pgbouncer+cluster"])
def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """Two replicas' base URLs and the admin key."""
    database = f"stoplist_replicas_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        _admin(f'CREATE DATABASE "{database}"')
    except Exception as exc:
        (pytest.fail if REQUIRE else pytest.skip)(f"PostgreSQL unreachable: {exc!r}")
    key = generate_key()
    env = {
        "STOPLIST_BOOTSTRAP_ADMIN_KEY": key,
        "STOPLIST_REDIS_PREFIX": f"sltest-{uuid.uuid4().hex[:8]}:",
        "STOPLIST_DATABASE_URL": f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{database}",
        "STOPLIST_REDIS_URL": REDIS_URL,
    }
    stops = []
    if request.param == "pgbouncer+cluster":
        bouncer = PgBouncer(pool_size=3).start()
        cluster = RedisClusterServers().start()
        stops += [bouncer.stop, cluster.stop]
        env |= {
            "STOPLIST_DATABASE_URL": bouncer.url(database),
            "STOPLIST_DATABASE_POOLER": "pgbouncer",
            "STOPLIST_REDIS_URL": cluster.url(),
        }
    procs = []
    try:
        for name in ("a", "b"):
            proc, base = _serve(tmp_path, env, name)
            procs.append((proc, base))
        yield procs[0][1], procs[1][1], key
    finally:
        for proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, _ in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        for stop in stops:
            stop()
        _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_a_change_on_one_replica_is_visible_on_the_other(replicas: tuple[str, str, str]) -> None:
    a, b, key = replicas
    auth = {"Authorization": f"Bearer {key}"}
    addresses = [f"r{i}@example.com" for i in range(20)]
    with httpx.Client(headers=auth, timeout=30) as http:
        for address in addresses[::2]:
            r = http.put(f"{a}/v1/suppressions/{address}", json={"outcome": "hard"})
            assert r.status_code in (200, 201), r.text
        expected = [i % 2 == 0 for i in range(20)]
        for base in (a, b):
            r = http.post(f"{base}/v1/check", json={"addresses": addresses})
            assert [x["suppressed"] for x in r.json()["results"]] == expected
        # Unsuppressed on b: the very next check on a, once b has answered, is clear.
        r = http.delete(f"{b}/v1/suppressions/{addresses[0]}", params={"reason": "test"})
        assert r.status_code in (200, 204), r.text
        r = http.get(f"{a}/v1/check", params={"address": addresses[0]})
        assert r.json()["suppressed"] is False
        # Suppressed on a: at once on b.
        r = http.put(f"{a}/v1/suppressions/{addresses[1]}", json={"outcome": "complaint"})
        assert r.status_code in (200, 201), r.text
        r = http.get(f"{b}/v1/check", params={"address": addresses[1]})
        assert (r.json()["suppressed"], r.json()["outcome"]) == (True, "complaint")
