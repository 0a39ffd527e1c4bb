"""The suppression replica on a real Redis Cluster of three masters started by the test
(``STOPLIST_REDIS_URL=redis+cluster://…``): checks single and batch, write-through, a flushed node,
and a master killed during checks (answers stay right, from the database while needed)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from pydantic import ValidationError

from app.cache import CacheCold, CacheUnavailable
from app.cache.cluster import BUCKETS, RedisClusterCache, bucket_of, parse_cluster_url, problems
from app.settings import Settings
from tests.conftest import REQUIRE, Env, close_env, make_env
from tests.servers import RedisClusterServers

SUPPRESSED = [f"hit{i}@example.com" for i in range(60)]
CLEAR = [f"clear{i}@example.com" for i in range(60)]


def _start_cluster() -> RedisClusterServers:
    try:
        return RedisClusterServers().start()
    except (FileNotFoundError, RuntimeError, OSError) as exc:
        message = f"Redis Cluster could not start: {exc!r}"
        if REQUIRE:
            pytest.fail(message + " (STOPLIST_TEST_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="module")
def cluster() -> AsyncIterator[RedisClusterServers]:
    servers = _start_cluster()
    yield servers  # type: ignore[misc]
    servers.stop()


async def _env(pg_url: str, servers: RedisClusterServers) -> Env:
    settings = Settings(
        database_url=pg_url, redis_url=servers.url(), redis_prefix=f"sltest-{uuid.uuid4().hex[:8]}:"
    )
    env = await make_env("cluster", settings)
    assert isinstance(env.services.cache, RedisClusterCache)
    return env


@pytest_asyncio.fixture(loop_scope="session")
async def cluster_env(pg_url: str, cluster: RedisClusterServers) -> AsyncIterator[Env]:
    env = await _env(pg_url, cluster)
    try:
        yield env
    finally:
        await close_env(env)


async def _suppress(env: Env, addresses: list[str]) -> None:
    for address in addresses:
        r = await env.client.put(
            f"/v1/suppressions/{address}",
            json={"outcome": "hard", "reason": "user_unknown"},
            headers=env.auth("write"),
        )
        assert r.status_code in (200, 201), r.text


async def _batch(env: Env, addresses: list[str]) -> list[bool]:
    r = await env.client.post("/v1/check", json={"addresses": addresses}, headers=env.auth("check"))
    assert r.status_code == 200, r.text
    return [x["suppressed"] for x in r.json()["results"]]


def test_url_and_buckets() -> None:
    assert parse_cluster_url("redis+cluster://u:pw@a:7000,b:7001") == (
        [("a", 7000), ("b", 7001)],
        "u",
        "pw",
    )
    with pytest.raises(ValueError, match="host:port"):
        parse_cluster_url("redis+cluster://a")
    assert len({bucket_of(a) for a in SUPPRESSED + CLEAR}) > BUCKETS // 2
    assert problems() == []  # the redis-py cluster internals the batch check sends through
    with pytest.raises(ValidationError, match="not host:port"):
        Settings(redis_url="redis+cluster://a:7000,b")
    with pytest.raises(ValueError, match="must not contain"):
        RedisClusterCache("redis+cluster://a:7000", prefix="{x}:")


async def test_check_single_and_batch(cluster_env: Env, cluster: RedisClusterServers) -> None:
    env = cluster_env
    await _suppress(env, SUPPRESSED)
    mixed = [a for pair in zip(SUPPRESSED, CLEAR, strict=True) for a in pair]
    assert await _batch(env, mixed) == [i % 2 == 0 for i in range(len(mixed))]
    for address, expected in ((SUPPRESSED[3], True), (CLEAR[3], False)):
        r = await env.client.get(
            "/v1/check", params={"address": address}, headers=env.auth("check")
        )
        assert r.json()["suppressed"] is expected
    # The cluster itself holds the answers (warm, no fallback), spread over every master.
    hit, miss = await env.services.cache.get_many([SUPPRESSED[3], CLEAR[3]])
    assert hit is not None and hit[0].outcome == "hard"
    assert miss is None
    assert all(int(cluster.cli(p, "dbsize")) > 0 for p in cluster.ports)


async def test_unsuppress_is_visible(cluster_env: Env) -> None:
    env = cluster_env
    await _suppress(env, SUPPRESSED[:2])
    r = await env.client.delete(
        f"/v1/suppressions/{SUPPRESSED[0]}", params={"reason": "test"}, headers=env.auth("write")
    )
    assert r.status_code in (200, 204), r.text
    assert await _batch(env, SUPPRESSED[:2]) == [False, True]


async def test_a_flushed_node_is_cold_not_clear(
    cluster_env: Env, cluster: RedisClusterServers
) -> None:
    env = cluster_env
    await _suppress(env, SUPPRESSED)
    cluster.cli(cluster.ports[0], "flushall")
    # Its buckets lost their ready markers: those checks answer from the database.
    assert await _batch(env, SUPPRESSED + CLEAR) == [True] * 60 + [False] * 60
    await env.services.suppressions.wait_rebuild()
    assert await env.services.cache.generation() is not None
    assert await _batch(env, SUPPRESSED + CLEAR) == [True] * 60 + [False] * 60


@pytest.mark.slow
async def test_a_master_killed_during_checks(pg_url: str) -> None:
    servers = _start_cluster()
    env = await _env(pg_url, servers)
    try:
        await _suppress(env, SUPPRESSED)
        expected = [True] * 60 + [False] * 60
        wrong: list[list[bool]] = []
        stop = asyncio.Event()

        async def checker() -> int:
            n = 0
            while not stop.is_set():
                got = await _batch(env, SUPPRESSED + CLEAR)
                if got != expected:
                    wrong.append(got)
                n += 1
                await asyncio.sleep(0.01)
            return n

        task = asyncio.create_task(checker())
        await asyncio.sleep(0.5)
        victim = servers.ports[1]
        servers.kill(victim)
        await asyncio.sleep(3)  # past the node timeout: the cluster reports the slots down
        with pytest.raises((CacheUnavailable, CacheCold)):  # the checks above used the database
            await env.services.cache.get_many(SUPPRESSED)
        servers.start_node(victim)  # back, empty: its buckets are cold until rebuilt
        await asyncio.to_thread(servers.wait_ok)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and await _cluster_generation(env) is None:
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        stop.set()
        checks = await task
        assert checks > 10
        assert wrong == []
        assert await _cluster_generation(env) is not None
        assert await _batch(env, SUPPRESSED + CLEAR) == expected
    finally:
        await close_env(env)
        servers.stop()


async def _cluster_generation(env: Env) -> str | None:
    try:
        return await env.services.cache.generation()
    except Exception:
        return None


@pytest.mark.slow
async def test_a_master_fails_over_to_its_replica_during_checks(pg_url: str) -> None:
    try:
        servers = RedisClusterServers(replicas=1).start()
    except (FileNotFoundError, RuntimeError, OSError) as exc:
        (pytest.fail if REQUIRE else pytest.skip)(f"Redis Cluster could not start: {exc!r}")
    env = await _env(pg_url, servers)
    try:
        await _suppress(env, SUPPRESSED)
        await asyncio.sleep(0.5)  # replicated (asynchronous replication)
        expected = [True] * 60 + [False] * 60
        wrong: list[list[bool]] = []
        stop = asyncio.Event()

        async def checker() -> int:
            n = 0
            while not stop.is_set():
                if await _batch(env, SUPPRESSED + CLEAR) != expected:
                    wrong.append([])
                n += 1
                await asyncio.sleep(0.01)
            return n

        task = asyncio.create_task(checker())
        await asyncio.sleep(0.5)
        victim = servers.master_ports()[0]
        servers.kill(victim)
        await asyncio.to_thread(servers.wait_failed_over, victim)  # a replica took its slots
        # The cache answers again by itself, from the promoted replica (no rebuild needed).
        deadline = time.monotonic() + 20
        answered = None
        while time.monotonic() < deadline:
            try:
                answered = await env.services.cache.get_many(SUPPRESSED[:5] + CLEAR[:5])
                break
            except (CacheUnavailable, CacheCold):
                await asyncio.sleep(0.2)
        stop.set()
        assert await task > 10
        assert wrong == []
        assert answered is not None
        assert [a is not None for a in answered] == [True] * 5 + [False] * 5
    finally:
        # Not close_env: its clear() would scan the dead master too (the cluster goes with it).
        await env.client.aclose()
        await env.services.suppressions.wait_rebuild()
        await env.services.keys.close()
        await env.services.cache.close()
        await env.services.db.dispose()
        servers.stop()
