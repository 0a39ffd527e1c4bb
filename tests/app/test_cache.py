"""The cache replica under faults: Redis down, Redis flushed, both stores down."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from app.cache import CacheCold, CachedEntry, CacheUnavailable, RedisCache
from app.cache.model import decode_hits, encode
from app.container import build_services
from app.settings import Settings
from app.suppression import SuppressRequest
from tests.conftest import Env

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1
DEAD_PG = "postgresql+asyncpg://postgres@127.0.0.1:1/test"


async def _hard(env: Env, address: str) -> None:
    await env.services.suppressions.suppress(
        SuppressRequest(address=address, outcome="hard", reason="user_unknown", source="bounce")
    )


async def test_redis_down_answers_from_database(pg_env: Env) -> None:
    await _hard(pg_env, "gone@example.com")
    settings = Settings(database_url=pg_env.settings.database_url, redis_url=DEAD_REDIS)
    services = build_services(settings)
    try:
        sup = services.suppressions
        from app import metrics

        before = metrics.CACHE_FALLBACKS.labels("unavailable")._value.get()
        answers = await sup.check_many(["gone@example.com", "fine@example.com"], None)
        assert [a["suppressed"] for a in answers] == [True, False]
        assert metrics.CACHE_FALLBACKS.labels("unavailable")._value.get() == before + 1
        assert sup.cache_state == "unavailable"
        # a write while the cache is down is committed; the replica is then distrusted
        await sup.suppress(
            SuppressRequest(address="new@example.com", outcome="hard", reason="x", source="api")
        )
        assert sup.cache_dirty
        (answer,) = await sup.check_many(["new@example.com"], None)
        assert answer["suppressed"] is True
    finally:
        await services.cache.close()
        await services.db.dispose()


async def test_a_burst_of_single_checks_with_redis_down_shares_database_queries(
    pg_env: Env,
) -> None:
    """With the cache unreachable, single checks arriving together are answered right from a few
    shared queries (one in flight at a time), not one query and one connection each."""
    from sqlalchemy import event

    await _hard(pg_env, "gone@example.com")
    settings = Settings(database_url=pg_env.settings.database_url, redis_url=DEAD_REDIS)
    services = build_services(settings)
    selects: list[str] = []

    # Each database read checks a connection out (on PostgreSQL the read goes to asyncpg
    # directly, past SQLAlchemy's cursor events): count those.
    def count(*_: Any) -> None:
        selects.append("checkout")

    event.listen(services.db.engine.sync_engine, "checkout", count)
    try:
        sup = services.suppressions
        addresses = [
            "gone@example.com" if i % 3 == 0 else f"fine{i}@example.com" for i in range(60)
        ]
        answers = await asyncio.gather(*(sup.check_one(a, None) for a in addresses))
        assert [a["suppressed"] for a in answers] == [a == "gone@example.com" for a in addresses]
        assert 1 <= len(selects) <= 5, len(selects)
    finally:
        event.remove(services.db.engine.sync_engine, "checkout", count)
        await services.cache.close()
        await services.db.dispose()


async def test_readyz_reports_degraded_and_unavailable(pg_env: Env) -> None:
    import httpx

    from app.main import create_app

    for db_url, redis_url, status, code in [
        (pg_env.settings.database_url, DEAD_REDIS, "degraded", 200),
        (DEAD_PG, DEAD_REDIS, "unavailable", 503),
    ]:
        settings = Settings(database_url=db_url, redis_url=redis_url, database_timeout_s=1)
        services = build_services(settings)
        app = create_app(settings, services=services)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            r = await client.get("/readyz")
        assert (r.status_code, r.json()["status"]) == (code, status)
        await services.cache.close()
        await services.db.dispose()


async def test_both_stores_down_is_503_never_clear(pg_env: Env) -> None:
    settings = Settings(database_url=DEAD_PG, redis_url=DEAD_REDIS, database_timeout_s=1)
    services = build_services(settings)
    from app.errors import Unavailable

    try:
        with pytest.raises(Unavailable):
            await services.suppressions.check_many(["anyone@example.com"], None)
        with pytest.raises(Unavailable):
            await services.suppressions.check_one("anyone@example.com", None)
    finally:
        await services.cache.close()
        await services.db.dispose()


async def test_both_stores_down_http_503(pg_env: Env) -> None:
    import httpx

    from app.main import create_app

    settings = Settings(database_url=DEAD_PG, redis_url=DEAD_REDIS, database_timeout_s=1)
    services = build_services(settings)
    # the key check itself needs the database: seed the verified-key memo so auth passes
    import time

    from app.keys import KeyInfo, hash_key

    key = pg_env.keys["check"]
    services.keys._verified[hash_key(key)] = (KeyInfo(1, "k", "check"), time.monotonic() + 60)
    app = create_app(settings, services=services)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get(
            "/v1/check",
            params={"address": "a@example.com"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 503
        assert r.json()["error"] == "unavailable"
        r = await c.post(
            "/v1/check",
            json={"addresses": ["a@example.com"]},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 503
    await services.cache.close()
    await services.db.dispose()


async def test_flushed_cache_is_detected_and_rebuilt_without_a_clear_window(pg_env: Env) -> None:
    addresses = [f"s{i}@example.com" for i in range(300)]
    for a in addresses:
        await _hard(pg_env, a)
    sup = pg_env.services.suppressions
    cache = pg_env.services.cache
    assert isinstance(cache, RedisCache)
    await cache.clear()  # as if Redis restarted empty
    with pytest.raises(CacheCold):
        await cache.get_many(addresses[:1])

    wrong: list[str] = []
    stop = asyncio.Event()

    async def check_loop() -> int:
        rounds = 0
        while not stop.is_set():
            for answer in await sup.check_many(addresses, None):
                if not answer["suppressed"]:
                    wrong.append(answer["address"])
            rounds += 1
            await asyncio.sleep(0)
        return rounds

    loop_task = asyncio.create_task(check_loop())
    await asyncio.sleep(0.05)
    sup.schedule_rebuild()  # the first cold read schedules one too; this one is a no-op then
    await sup.wait_rebuild()
    await asyncio.sleep(0.05)
    stop.set()
    rounds = await loop_task
    assert rounds > 1
    assert wrong == []
    assert await cache.generation() is not None
    assert all(e is not None for e in await cache.get_many(addresses))


async def test_rebuild_clears_stale_entries(pg_env: Env) -> None:
    """An entry removed while the cache was unreachable is dropped by the rebuild."""
    await _hard(pg_env, "stale@example.com")
    sup = pg_env.services.suppressions
    await sup.unsuppress(
        "stale@example.com",
        stream=None,
        all_scopes=True,
        reason="test",
        actor="t",
        may_remove_complaints=False,
    )
    # simulate the missed write-through: put the old state back with an old version
    from app.cache import CachedEntry

    old = CachedEntry(
        "global", "hard", "user_unknown", "2026-01-01T00:00:00Z", None, None, False, "bounce"
    )
    cache = pg_env.services.cache
    assert isinstance(cache, RedisCache)
    await cache._client.set(
        cache.key("stale@example.com"), b"1|" + __import__("orjson").dumps([old.as_list()])
    )
    assert (await sup.check_many(["stale@example.com"], None))[0]["suppressed"] is True
    await sup.rebuild_cache()
    assert (await sup.check_many(["stale@example.com"], None))[0]["suppressed"] is False


async def test_older_version_never_overwrites_newer(pg_env: Env) -> None:
    from app.cache import CachedEntry

    cache = pg_env.services.cache
    e = CachedEntry(
        "global", "hard", "user_unknown", "2026-01-01T00:00:00Z", None, None, False, "bounce"
    )
    addr = f"v{uuid.uuid4().hex[:6]}@example.com"
    await cache.put(addr, 5, [e])
    await cache.put(addr, 4, [])
    assert (await cache.get_many([addr]))[0] == (e,)
    await cache.put(addr, 6, [])
    assert (await cache.get_many([addr]))[0] is None
    await cache.put(addr, 5, [e])
    assert (await cache.get_many([addr]))[0] is None


async def test_a_rebuild_never_vouches_for_a_cache_marked_cold_while_it_ran(pg_env: Env) -> None:
    """Another process whose write-through failed marks the cache cold (when it can reach Redis
    again) while this one rebuilds: the rebuild may have read those addresses before the write,
    so it must not set the ready marker; the next rebuild does."""
    settings = pg_env.settings
    assert settings.redis_url is not None
    other = RedisCache(settings.redis_url, prefix=settings.redis_prefix)
    cache = pg_env.services.cache
    try:
        await cache.mark_cold()

        async def rebuild(cold_in_between: bool) -> None:
            assert await cache.try_lock_rebuild(ttl_s=60)
            try:
                if cold_in_between:
                    await other.mark_cold()
                await cache.mark_ready("g1")
            finally:
                await cache.unlock_rebuild()

        with pytest.raises(CacheUnavailable):
            await asyncio.create_task(rebuild(cold_in_between=True))
        assert await cache.generation() is None
        await asyncio.create_task(rebuild(cold_in_between=False))
        assert await cache.generation() == "g1"
    finally:
        await other.close()


async def test_a_dirty_process_marks_the_cache_cold_once_not_on_every_attempt(
    pg_env: Env,
) -> None:
    """A process whose write-through failed marks the cache cold once; when another process holds
    the rebuild lock it leaves the rebuild to it. Marking it cold on every housekeeping tick
    failed every other process's rebuild (the cold epoch moved each time): a cache cold for ever,
    found by the soak with Redis down."""
    cache = pg_env.services.cache
    assert isinstance(cache, RedisCache)
    other = build_services(pg_env.settings)  # another process of the same service
    try:

        async def epoch() -> int:
            return int(await cache._client.get(cache._epoch_key) or 0)

        async def hold_lock() -> None:
            assert await cache.try_lock_rebuild(ttl_s=60)

        await asyncio.create_task(hold_lock())  # a rebuild elsewhere holds the lock
        other.suppressions.cache_dirty = True
        start = await epoch()
        assert await other.suppressions.rebuild_cache() == 0  # marked cold, lock held elsewhere
        assert await epoch() == start + 1
        assert not other.suppressions.cache_dirty
        for _ in range(3):  # later housekeeping ticks
            assert await other.suppressions.rebuild_cache() == 0
        assert await epoch() == start + 1
        await cache.unlock_rebuild()
        await pg_env.services.suppressions.rebuild_cache()  # the next rebuild completes
        assert await cache.generation() is not None
    finally:
        await other.cache.close()
        await other.db.dispose()


async def test_keys_of_non_ascii_addresses_are_sent_with_their_byte_lengths(pg_env: Env) -> None:
    """The MGET is packed by hand; a key's RESP length is its UTF-8 byte count, also when some
    addresses of the batch are ASCII and some are not."""
    from app.cache import CachedEntry

    cache = pg_env.services.cache
    assert isinstance(cache, RedisCache)
    e = CachedEntry(
        "global", "hard", "user_unknown", "2026-01-01T00:00:00Z", None, None, False, "bounce"
    )
    tag = uuid.uuid4().hex[:6]
    ascii_one, utf8_one = f"plain{tag}@example.com", f"jöhn.ü{tag}@example.com"
    await cache.put(utf8_one, 1, [e])
    await cache.put(ascii_one, 1, [e])
    got = await cache.get_many([ascii_one, utf8_one, f"nöbody{tag}@example.com", "x@example.com"])
    assert got == [(e,), (e,), None, None]


async def test_an_undecodable_value_makes_the_cache_cold_not_clear(pg_env: Env) -> None:
    cache = pg_env.services.cache
    assert isinstance(cache, RedisCache)
    await cache.mark_ready("test")
    addr = f"junk{uuid.uuid4().hex[:6]}@example.com"
    for junk in (b"1|[[1,2]]", b"1|[7]", b"1|not json", b"1|", b"no version", b"1|[],[]"):
        await cache._client.set(cache.key(addr), junk)
        with pytest.raises(CacheCold):
            await cache.get_many([addr])


def test_hits_decode_as_they_were_encoded() -> None:
    """A batch's values are decoded together (one JSON parse); each slot still gets its own
    entries, an empty value reads as no entry, and a value holding two JSON values is refused
    rather than shifting the slots after it."""
    hard = CachedEntry(
        "global", "hard", "user_unknown", "2026-01-01T00:00:00Z", None, None, False, "bounce"
    )
    soft = CachedEntry(
        "news",
        "soft",
        "mailbox_full",
        "2026-01-02T00:00:00Z",
        1.8e9,
        "2027-01-15T08:00:00Z",
        True,
        "api",
    )
    values = [None, encode(3, [hard]), encode(1, []), None, encode(12, [soft, hard]), None]
    assert decode_hits(values) == [None, (hard,), None, None, (soft, hard), None]
    assert decode_hits([None, None]) == [None, None]
    assert decode_hits([]) == []
    two = encode(3, [hard]) + b"," + encode(3, [soft]).partition(b"|")[2]
    for bad in (two, b"3|", b"[]", b"3|[[1]]"):
        with pytest.raises((TypeError, ValueError)):
            decode_hits([encode(1, [hard]), bad, encode(1, [soft])])
