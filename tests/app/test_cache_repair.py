"""Write-throughs that fail are written again, not paid for with a rebuild: a process that could
not reach Redis for a moment puts the addresses it missed once Redis answers, while the replica
stays ready for every other process; only a replica gone cold meanwhile, or too many missed
addresses, cost a rebuild. And a replica left cold is rebuilt without waiting for a check."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.engine import make_url

from app import metrics
from app.cache import CacheUnavailable, RedisCache
from app.container import Services, build_services, housekeeping
from app.suppression import SuppressRequest, replica
from tests.conftest import Env
from tests.faultproxy import FaultProxy


@contextlib.asynccontextmanager
async def _behind_proxy(env: Env) -> AsyncIterator[tuple[Services, FaultProxy]]:
    """Another process of the service, whose path to Redis the test can break."""
    at = make_url(env.settings.redis_url or "")
    proxy = await FaultProxy(at.host or "", at.port or 6379).start()
    url = at.set(port=proxy.port).render_as_string(hide_password=False)
    services = build_services(env.settings.model_copy(update={"redis_url": url}))
    try:
        yield services, proxy
    finally:
        await services.cache.close()
        await services.db.dispose()
        await proxy.aclose()


async def _suppress(services: Services, address: str) -> None:
    await services.suppressions.suppress(
        SuppressRequest(address=address, outcome="hard", reason="user_unknown", source="api")
    )


async def _upkeep(services: Services) -> int:
    """What housekeeping does for a dirty process, retried while Redis still refuses it (the
    client skips Redis for a moment after a failure)."""
    for _ in range(100):
        try:
            return await services.suppressions.rebuild_cache()
        except CacheUnavailable:
            await asyncio.sleep(0.1)
    raise AssertionError("Redis never answered")


async def _cached(env: Env, address: str) -> bool:
    """Suppressed according to the shared cache alone (what another replica reads)."""
    (entries,) = await env.services.cache.get_many([address])
    return bool(entries)


async def test_a_missed_write_through_is_written_again_and_the_cache_stays_ready(
    pg_env: Env,
) -> None:
    await pg_env.services.suppressions.rebuild_cache()
    ready = await pg_env.services.cache.generation()
    assert ready is not None
    async with _behind_proxy(pg_env) as (other, proxy):
        proxy.refuse()
        await _suppress(other, "missed@example.com")
        assert other.suppressions.cache_dirty
        (answer,) = await other.suppressions.check_many(["missed@example.com"], None)
        assert answer["suppressed"] is True  # this process answers from the database meanwhile
        assert not await _cached(pg_env, "missed@example.com")  # the replica lacks it
        repairs = metrics.CACHE_REPAIRS._value.get()
        proxy.passthrough()
        assert await _upkeep(other) == 0  # nothing rebuilt
        assert not other.suppressions.cache_dirty
        assert metrics.CACHE_REPAIRS._value.get() == repairs + 1
    assert await _cached(pg_env, "missed@example.com")
    assert await pg_env.services.cache.generation() == ready  # never marked cold


async def test_more_missed_addresses_than_the_limit_mark_the_cache_cold_and_rebuild(
    pg_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replica, "REPAIR_LIMIT", 2)
    await pg_env.services.suppressions.rebuild_cache()
    ready = await pg_env.services.cache.generation()
    async with _behind_proxy(pg_env) as (other, proxy):
        proxy.refuse()
        for name in ("a", "b", "c"):
            await _suppress(other, f"{name}@example.com")
        proxy.passthrough()
        assert await _upkeep(other) == 3  # a full rebuild
    assert await pg_env.services.cache.generation() not in (None, ready)
    for name in ("a", "b", "c"):
        assert await _cached(pg_env, f"{name}@example.com")


async def test_a_miss_while_the_cache_went_cold_marks_it_cold_again(pg_env: Env) -> None:
    """A rebuild elsewhere may have read the address before its write: the repair does not
    vouch for that rebuild; the process marks the cache cold (the epoch moves), as before."""
    cache = pg_env.services.cache
    assert isinstance(cache, RedisCache)
    await pg_env.services.suppressions.rebuild_cache()
    async with _behind_proxy(pg_env) as (other, proxy):
        proxy.refuse()
        await _suppress(other, "late@example.com")
        await cache.mark_cold()
        epoch = int(await cache._client.get(cache._epoch_key) or 0)
        proxy.passthrough()
        assert await _upkeep(other) == 1
        assert int(await cache._client.get(cache._epoch_key) or 0) == epoch + 1
    assert await cache.generation() is not None
    assert await _cached(pg_env, "late@example.com")


async def test_housekeeping_rebuilds_a_cold_replica_no_check_asked_for(pg_env: Env) -> None:
    """A rebuild that lost to another process's cold mark left the replica cold, and nothing but a
    check missing it started the next one: ``/readyz`` said ``cold`` for as long as no check came
    (found by the soak, which polls ``/readyz`` after its load)."""
    services = build_services(pg_env.settings)
    await _suppress(pg_env.services, "kept@example.com")
    await services.cache.mark_cold()
    keeper = asyncio.create_task(housekeeping(services, interval_s=0.05))
    try:
        async with asyncio.timeout(20):
            while await services.cache.generation() is None:
                await asyncio.sleep(0.05)
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        await services.suppressions.wait_rebuild()
        await services.cache.close()
        await services.db.dispose()
    assert await _cached(pg_env, "kept@example.com")
