"""Two ``stoplist serve`` processes on one PostgreSQL and one Redis (and the same through PgBouncer
and a Redis Cluster): the same answers from both, and a change made on one is visible on the other
as soon as it has been answered (the write-through to the shared cache precedes the answer). The
split topology (``--role api`` twice, ``--role intake`` twice): bounces sent to the intake-only
processes are applied once each and answered alike by both API processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.keys.model import generate_key
from tests.app.test_smtp import HARD_BOUNCE, SINK_DOMAINS, send
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


def _serve(
    tmp_path: Path, env: dict[str, str], name: str, role: str = "all"
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``stoplist serve --role role``; wait until it answers ``/readyz`` (or, for the
    intake role, which has no HTTP, until its SMTP sink listens)."""
    port = free_port()
    with (tmp_path / f"{name}.log").open("wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "stoplist"), "serve", "--role", role],
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
            if role == "intake":
                socket.create_connection(("127.0.0.1", int(env["STOPLIST_SMTP_PORT"]))).close()
                return proc, base
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return proc, base
        except (httpx.HTTPError, OSError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{name} did not start:\n{(tmp_path / f'{name}.log').read_text()}")
        time.sleep(0.2)


def _database() -> tuple[str, dict[str, str]]:
    """A fresh database's name, and the environment of replicas sharing it and one Redis."""
    database = f"stoplist_replicas_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        _admin(f'CREATE DATABASE "{database}"')
    except Exception as exc:
        (pytest.fail if REQUIRE else pytest.skip)(f"PostgreSQL unreachable: {exc!r}")
    return database, {
        "STOPLIST_BOOTSTRAP_ADMIN_KEY": generate_key(),
        "STOPLIST_REDIS_PREFIX": f"sltest-{uuid.uuid4().hex[:8]}:",
        "STOPLIST_DATABASE_URL": f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{database}",
        "STOPLIST_REDIS_URL": REDIS_URL,
    }


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(params=["redis", "pgbouncer+cluster"])
def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """Two replicas' base URLs and the admin key."""
    database, env = _database()
    key = env["STOPLIST_BOOTSTRAP_ADMIN_KEY"]
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
        _stop([proc for proc, _ in procs])
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


@dataclass
class Split:
    """The split topology's processes: two API processes, two intake-only processes."""

    api: list[str]  # base URLs
    smtp_ports: list[int]
    procs: dict[str, subprocess.Popen[bytes]]
    key: str
    database_url: str


@pytest.fixture
def split(tmp_path: Path) -> Iterator[Split]:
    database, env = _database()
    # The same SMTP settings for every process: an API process must not open the sink (the
    # intake process started after it on the same port would fail to listen).
    ports = [free_port(), free_port()]
    env |= {
        "STOPLIST_SMTP_ENABLED": "true",
        "STOPLIST_SMTP_DOMAINS": ",".join(SINK_DOMAINS),
        "STOPLIST_SMTP_PORT": str(ports[0]),
        "STOPLIST_PARSE_WORKERS": "1",
    }
    started: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        for name, role, smtp_port in [
            ("api-a", "api", ports[0]),
            ("api-b", "api", ports[0]),
            ("intake-c", "intake", ports[0]),
            ("intake-d", "intake", ports[1]),
        ]:
            started[name] = _serve(
                tmp_path, env | {"STOPLIST_SMTP_PORT": str(smtp_port)}, name, role
            )
        yield Split(
            api=[started["api-a"][1], started["api-b"][1]],
            smtp_ports=ports,
            procs={name: proc for name, (proc, _) in started.items()},
            key=env["STOPLIST_BOOTSTRAP_ADMIN_KEY"],
            database_url=env["STOPLIST_DATABASE_URL"],
        )
    finally:
        _stop([proc for proc, _ in started.values()])
        _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _inbound_and_events(database_url: str, addresses: list[str]) -> tuple[list[Any], list[Any]]:
    import asyncpg

    async def run() -> tuple[list[Any], list[Any]]:
        conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            inbound = await conn.fetch("SELECT id, state, attempts FROM inbound_messages")
            events = await conn.fetch(
                "SELECT address, count(*) AS n FROM events WHERE address = ANY($1) GROUP BY address",
                addresses,
            )
            return list(inbound), list(events)
        finally:
            await conn.close()

    return asyncio.run(run())


def test_intake_only_processes_apply_bounces_once_for_both_api_processes(split: Split) -> None:
    # The roles below the API run at a lower CPU priority.
    base_nice = os.getpriority(os.PRIO_PROCESS, 0)
    nice = {name: os.getpriority(os.PRIO_PROCESS, p.pid) for name, p in split.procs.items()}
    assert nice == {
        "api-a": base_nice,
        "api-b": base_nice,
        "intake-c": min(base_nice + 5, 19),
        "intake-d": min(base_nice + 5, 19),
    }
    addresses = [f"split{i}@example.net" for i in range(12)]
    for i, address in enumerate(addresses):  # half to each intake process
        raw = HARD_BOUNCE.replace(b"carol@example.net", address.encode())
        code, msg = send(split.smtp_ports[i % 2], raw)
        assert code == 250, msg
    auth = {"Authorization": f"Bearer {split.key}"}
    never = [f"never{i}@example.net" for i in range(4)]
    with httpx.Client(headers=auth, timeout=30) as http:

        def answers(base: str) -> list[bool]:
            r = http.post(f"{base}/v1/check", json={"addresses": addresses + never})
            assert r.status_code == 200, r.text
            return [x["suppressed"] for x in r.json()["results"]]

        expected = [True] * len(addresses) + [False] * len(never)
        deadline = time.monotonic() + 120
        while answers(split.api[0]) != expected:
            assert time.monotonic() < deadline, answers(split.api[0])
            time.sleep(0.2)
        assert answers(split.api[1]) == expected
        # Unsuppressed on b: the next check on a, once b has answered, is clear.
        r = http.delete(f"{split.api[1]}/v1/suppressions/{addresses[0]}", params={"reason": "test"})
        assert r.status_code in (200, 204), r.text
        r = http.get(f"{split.api[0]}/v1/check", params={"address": addresses[0]})
        assert r.json()["suppressed"] is False
    # Every process is still running: an API process that had opened the sink would have taken
    # intake-c's port, and intake-c would have exited.
    assert {name: p.poll() for name, p in split.procs.items()} == dict.fromkeys(split.procs)
    inbound, events = _inbound_and_events(split.database_url, addresses)
    # Each stored message was claimed once (``attempts`` counts claims) and processed; each
    # bounced address has the one event its bounce wrote, plus the lift for the first.
    assert sorted((r["state"], r["attempts"]) for r in inbound) == [("processed", 1)] * 12
    counts = {r["address"]: r["n"] for r in events}
    assert counts == {address: 2 if address == addresses[0] else 1 for address in addresses}
