"""Storage and cache faults injected through a TCP proxy (``tests.faultproxy``) between the service
and the real PostgreSQL and Redis: nothing is mocked and no server is stopped.

Properties (the reliability issue, "acknowledge only after commit" and "cache and stores"):

* the SMTP sink answers 250 only once the INSERT holding the message has committed on the server
  (RFC 5321 §4.2.5: a 250 after DATA is the receiver taking responsibility); a failure before the
  statement, before its commit, or after it (reply lost) is ``451 4.3.0``, never 250 or 5xx;
* the same envelope + bytes delivered again after an ambiguous commit is stored once (the
  envelope digest is unique) and processed once;
* a hung database yields 451 within ``smtp_storage_timeout_s`` measured at the client, other
  sessions stay responsive, and intake resumes by itself once the database answers again;
* the pre-send check never answers "not suppressed" because Redis broke, stays fast while Redis
  hangs, returns to the cache when it comes back, and answers 503 when both stores are down.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import smtplib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
import redis.exceptions
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.cache import CacheCold, CacheUnavailable, RedisCache
from app.db import Database
from app.intake import Intake, envelope_digest
from app.intake.parse_pool import ParsingPool
from app.intake.smtp import Reply, SmtpSink
from app.settings import Settings
from app.suppression import SuppressRequest
from tests.conftest import Env, close_env, make_env
from tests.faultproxy import Fault, FaultProxy

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
HARD_BOUNCE = (SAMPLES / "bounce/postfix-01.eml").read_bytes().replace(b"\r\n", b"\n")
HARD_BOUNCE = HARD_BOUNCE.replace(b"\n", b"\r\n")  # as an MTA sends it
RCPT = "bounce+carol=example.net@bounces.example.net"
INSERT_MESSAGE = b"INSERT INTO inbound_messages"
STORAGE_TIMEOUT_S = 1.0
TEMPORARY = (451, Reply.TEMPORARY[4:].encode())
ACCEPTED = (250, Reply.ACCEPTED[4:].encode())
DUPLICATE = (250, Reply.DUPLICATE[4:].encode())


def message(tag: str) -> bytes:
    """The hard-bounce sample made unique (its own digest) by a trailing line."""
    return HARD_BOUNCE + f"X-Test: {tag} {uuid.uuid4().hex}\r\n".encode()


def via(url: str, port: int) -> str:
    return make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


@dataclass
class Faults:
    """The service on PostgreSQL + Redis, both reached through a fault proxy; ``direct`` reads
    the database around the proxy to see what was really committed."""

    env: Env
    pg: FaultProxy
    redis: FaultProxy
    direct: Database
    redis_url: str

    async def stored(self, raw: bytes, rcpt: str = RCPT) -> list[dict[str, Any]]:
        digest = envelope_digest("", [rcpt], raw)
        async with self.direct.read() as s:
            rows = await s.execute(
                text("SELECT id, state, attempts, error FROM inbound_messages WHERE digest = :d"),
                {"d": digest},
            )
            return [dict(r._mapping) for r in rows]

    async def flush_redis(self) -> None:
        """Delete this test's keys on the real Redis, around the proxy (a restart's data loss)."""
        client = aioredis.Redis.from_url(self.redis_url)
        try:
            keys = [k async for k in client.scan_iter(match=self.env.settings.redis_prefix + "*")]
            if keys:
                await client.unlink(*keys)
        finally:
            await client.aclose()

    async def events_of(self, message_id: int) -> int:
        async with self.direct.read() as s:
            found = await s.execute(
                text("SELECT count(*) FROM events WHERE message_id = :m"), {"m": message_id}
            )
            return int(found.scalar_one())


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def faulty_service(pg_url: str, redis_url: str) -> AsyncIterator[Faults]:
    """One service for the module (building one costs more than most tests here)."""
    pg_at, redis_at = make_url(pg_url), make_url(redis_url)
    pg = await FaultProxy(pg_at.host or "", pg_at.port or 5432, protocol="postgres").start()
    redis = await FaultProxy(redis_at.host or "", redis_at.port or 6379).start()
    settings = Settings(
        database_url=via(pg_url, pg.port),
        redis_url=via(redis_url, redis.port),
        redis_prefix=f"sltest-{uuid.uuid4().hex[:8]}:",
        database_timeout_s=1.0,
        redis_timeout_s=0.5,
        smtp_storage_timeout_s=STORAGE_TIMEOUT_S,
        auth_cache_ttl_s=600,  # the API key stays verified while the stores are broken
    )
    direct = Database(Settings(database_url=pg_url))
    env = await make_env("postgres", settings)
    assert isinstance(env.services.cache, RedisCache)
    # Redis is probed again sooner after a failure than in production (1 s): quicker recoveries.
    env.services.cache.retry_after_s = 0.3
    try:
        yield Faults(env, pg, redis, direct, redis_url)
    finally:
        await close_env(env)
        await direct.dispose()
        await pg.aclose()
        await redis.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def faults(faulty_service: Faults) -> AsyncIterator[Faults]:
    """The shared service; afterwards every fault is lifted and the cache is warm again, so each
    test starts from a healthy service."""
    f = faulty_service
    yield f
    for proxy in (f.pg, f.redis):
        proxy.clear()
        proxy.passthrough()
    sup, cache = f.env.services.suppressions, f.env.services.cache
    sup.auto_rebuild = True
    await sup.wait_rebuild()

    async def healthy() -> bool:
        try:
            await cache.get_many([])  # Redis answers (the probe after a recent failure)
        except CacheCold:
            return True
        except CacheUnavailable:
            return False
        return True

    await eventually(healthy)
    if sup.cache_dirty or await cache.generation() is None:
        await sup.rebuild_cache()


@dataclass
class Sink:
    intake: Intake
    server: SmtpSink

    @property
    def port(self) -> int:
        return self.server.port

    async def stop(self) -> None:
        await self.server.stop()
        await self.intake.close()


@pytest_asyncio.fixture(loop_scope="session")
async def sink(faults: Faults, parse_pool: ParsingPool) -> AsyncIterator[Sink]:
    """The sink with processing on this loop (its sweep interval left at 30 s: a test that sees a
    message processed saw it handed over, not swept up by chance)."""
    settings = faults.env.settings.model_copy(
        update={"smtp_port": 0, "smtp_domains": ["bounces.example.net"], "parse_workers": 1}
    )
    services = dataclasses.replace(faults.env.services, settings=settings)
    intake = Intake(services, pool=parse_pool)
    await intake.start()
    server = SmtpSink(settings, intake)
    await server.start()
    s = Sink(intake, server)
    yield s
    for proxy in (faults.pg, faults.redis):  # stop against healthy stores: a quick teardown
        proxy.clear()
        proxy.passthrough()
    await s.stop()


def deliver(port: int, raw: bytes, rcpt: str = RCPT) -> tuple[int, bytes, float]:
    """One transaction with a real SMTP client: (code, text, seconds from end of data to reply)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("mta.example.com")
        assert c.mail("")[0] == 250
        assert c.rcpt(rcpt)[0] == 250
        started = time.monotonic()
        code, reply = c.data(raw)
        return code, reply, time.monotonic() - started


async def send(port: int, raw: bytes) -> tuple[int, bytes]:
    code, reply, _ = await asyncio.to_thread(deliver, port, raw)
    return code, reply


async def eventually(pred: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def processed_once(faults: Faults, raw: bytes, timeout: float = 10.0) -> None:
    """The message is stored once, processed once, and its bounce applied once."""

    async def done() -> bool:
        rows = await faults.stored(raw)
        return len(rows) == 1 and rows[0]["state"] != "pending"

    await eventually(done, timeout)
    [row] = await faults.stored(raw)
    assert (row["state"], row["attempts"]) == ("processed", 1), row
    assert await faults.events_of(row["id"]) == 1


# ---------------------------------------------------------------- acknowledge only after commit


async def test_insert_that_never_reaches_the_server_is_451(
    faults: Faults, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    raw = message("insert-cut")
    cut = faults.pg.arm(INSERT_MESSAGE, Fault.DROP)
    assert await send(sink.port, raw) == TEMPORARY
    assert cut.fired >= 1  # the fault happened (the sink retries once on a fresh connection)
    assert await faults.stored(raw) == []
    # The failure is logged without the statement's parameters (the bounce and its recipients).
    assert "storing a message failed" in caplog.text
    assert raw.splitlines()[-1].decode() not in caplog.text and "carol" not in caplog.text

    faults.pg.clear()  # the MTA retries later
    assert await send(sink.port, raw) == ACCEPTED
    await processed_once(faults, raw)


async def test_insert_whose_commit_never_happens_is_451(faults: Faults, sink: Sink) -> None:
    raw = message("commit-cut")
    cut = faults.pg.arm(INSERT_MESSAGE, Fault.UNCOMMITTED)
    assert await send(sink.port, raw) == TEMPORARY
    # The server did insert the row, in a transaction that was then rolled back.
    assert cut.fired >= 1 and b"INSERT 0 1" in cut.swallowed, cut.swallowed
    assert await faults.stored(raw) == []

    faults.pg.clear()
    assert await send(sink.port, raw) == ACCEPTED
    await processed_once(faults, raw)


async def test_commit_with_a_lost_reply_is_451_and_the_redelivery_is_stored_once(
    faults: Faults, sink: Sink
) -> None:
    raw = message("reply-lost")
    lost = faults.pg.arm(INSERT_MESSAGE, Fault.LOSE_REPLY)
    assert await send(sink.port, raw) == TEMPORARY  # committed, but the sink cannot know
    assert lost.swallowed[:1] == [b"INSERT 0 1"], lost.swallowed
    [row] = await faults.stored(raw)
    assert row["state"] == "pending"

    faults.pg.clear()
    # The MTA redelivers the same envelope and bytes: acknowledged, not stored twice, and the
    # row the lost commit left behind is processed now (not at the next periodic sweep).
    assert await send(sink.port, raw) == DUPLICATE
    await processed_once(faults, raw, timeout=10.0)


async def test_lost_reply_then_the_retry_finds_the_row(faults: Faults, sink: Sink) -> None:
    """The sink retries a failed store once; after an ambiguous commit that retry finds the digest
    already there and the session gets its 250 (the message is durable), still one row."""
    raw = message("reply-lost-once")
    lost = faults.pg.arm(INSERT_MESSAGE, Fault.LOSE_REPLY, times=1)
    assert await send(sink.port, raw) == DUPLICATE
    assert lost.fired == 1
    await processed_once(faults, raw)


async def test_proxy_raw_triggers_on_redis(faults: Faults) -> None:
    """The proxy's triggers on a raw stream (Redis): DROP never delivers the command; LOSE_REPLY
    delivers it and cuts the connection before the reply, so the client cannot tell."""
    key = faults.env.settings.redis_prefix + "proxy-probe"
    client = aioredis.Redis.from_url(via(faults.redis_url, faults.redis.port), retry=None)
    direct = aioredis.Redis.from_url(faults.redis_url)
    try:
        dropped = faults.redis.arm(b"dropped-value", Fault.DROP)
        with pytest.raises(redis.exceptions.ConnectionError):
            await client.set(key, "dropped-value")
        assert dropped.fired == 1 and await direct.get(key) is None

        lost = faults.redis.arm(b"lost-reply-value", Fault.LOSE_REPLY)
        with pytest.raises(redis.exceptions.ConnectionError):
            await client.set(key, "lost-reply-value")
        assert lost.swallowed == [b"+OK\r\n"]
        assert await direct.get(key) == b"lost-reply-value"
    finally:
        await direct.delete(key)
        await client.aclose()
        await direct.aclose()


# ---------------------------------------------------------------- database hung or unreachable


async def test_hung_database_is_451_in_bounded_time_and_intake_resumes(
    faults: Faults, sink: Sink
) -> None:
    assert await send(sink.port, message("warm-up")) == ACCEPTED  # connections open and idle
    faults.pg.blackhole()  # the database stops answering (as under SIGSTOP); nothing is closed
    hung = asyncio.create_task(asyncio.to_thread(deliver, sink.port, message("hung")))

    def noop_times() -> list[float]:
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as c:
            out = []
            for _ in range(5):
                started = time.monotonic()
                assert c.noop()[0] == 250
                out.append(time.monotonic() - started)
            return out

    await asyncio.sleep(0.2)
    assert not hung.done()
    assert max(await asyncio.to_thread(noop_times)) < 0.25  # other sessions stay responsive
    code, reply, took = await hung
    assert (code, reply) == TEMPORARY
    assert STORAGE_TIMEOUT_S * 0.9 <= took < STORAGE_TIMEOUT_S + 1.5, took

    faults.pg.passthrough()  # it answers again: the hung statements complete, nothing restarted
    raw = message("after-hang")
    assert await send(sink.port, raw) == ACCEPTED
    await processed_once(faults, raw)


async def test_database_that_never_answers_old_connections_recovers(
    faults: Faults, sink: Sink
) -> None:
    """A database host that comes back without ever answering the connections it had (no RST:
    a failover, a stateful firewall): the sink must not wait for them past its storage timeout."""
    assert await send(sink.port, message("warm-up")) == ACCEPTED
    faults.pg.blackhole()
    assert (await send(sink.port, message("hung")))[0] == 451
    faults.pg.passthrough(resume=False)  # new connections work; the old ones stay hung forever
    raw = message("after-failover")
    started = time.monotonic()
    code = 0
    while code != 250 and time.monotonic() - started < 10:
        code, _ = await send(sink.port, raw)
        assert code in (250, 451)
    assert code == 250
    assert time.monotonic() - started < 2 * STORAGE_TIMEOUT_S + 2


async def test_unreachable_database_is_451_and_intake_resumes(faults: Faults, sink: Sink) -> None:
    """The server is gone (open connections reset, new ones refused), then it accepts connections
    but each dies at its first statement (a crash-looping server): 451 throughout, never 250 or
    5xx, and intake resumes by itself when it is back."""
    assert await send(sink.port, message("warm-up")) == ACCEPTED
    faults.pg.refuse()
    assert await faults.pg.reset() >= 1  # the open connections die with an RST
    for i in range(2):
        code, reply, took = await asyncio.to_thread(deliver, sink.port, message(f"down-{i}"))
        assert (code, reply) == TEMPORARY
        assert took < STORAGE_TIMEOUT_S + 1.0
    faults.pg.passthrough()
    dies = faults.pg.arm(b"", Fault.DROP)  # b"": every statement
    for i in range(2):
        code, reply, took = await asyncio.to_thread(deliver, sink.port, message(f"dying-{i}"))
        assert (code, reply) == TEMPORARY
        assert took < STORAGE_TIMEOUT_S + 1.0
    assert dies.fired >= 2
    faults.pg.clear()
    raw = message("back")
    assert await send(sink.port, raw) == ACCEPTED
    await processed_once(faults, raw)


# ---------------------------------------------------------------- cache faults


async def _hard(env: Env, address: str) -> None:
    await env.services.suppressions.suppress(
        SuppressRequest(address=address, outcome="hard", reason="user_unknown", source="bounce")
    )


async def check(env: Env, address: str) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    r = await env.client.get("/v1/check", params={"address": address}, headers=env.auth("check"))
    return r.status_code, r.json(), time.monotonic() - started


async def check_batch(env: Env, addresses: list[str]) -> list[bool]:
    r = await env.client.post("/v1/check", json={"addresses": addresses}, headers=env.auth("check"))
    assert r.status_code == 200, r.text
    return [bool(a["suppressed"]) for a in r.json()["results"]]


async def test_redis_reset_and_refused_answers_from_the_database(faults: Faults) -> None:
    env = faults.env
    sup = env.services.suppressions
    await _hard(env, "gone@example.com")
    assert (await check(env, "gone@example.com"))[1]["suppressed"] is True
    assert sup.cache_state == "ok"

    faults.redis.refuse()
    assert await faults.redis.reset() >= 1
    for _ in range(3):
        code, answer, took = await check(env, "gone@example.com")
        assert (code, answer["suppressed"]) == (200, True)
        assert took < 1.0
        assert await check_batch(env, ["gone@example.com", "fine@example.com"]) == [True, False]
    assert sup.cache_state == "unavailable"
    # A write while Redis is unreachable is committed and answered from the database.
    r = await env.client.put(
        "/v1/suppressions/new@example.com",
        json={"reason": "customer_request"},
        headers=env.auth("write"),
    )
    assert r.status_code in (200, 201), r.text
    assert (await check(env, "new@example.com"))[1]["suppressed"] is True

    faults.redis.passthrough()

    async def cache_serves_again() -> bool:
        answer = await check(env, "new@example.com")
        return answer[1]["suppressed"] is True and sup.cache_state == "ok"

    await eventually(cache_serves_again)
    entries = await env.services.cache.get_many(["gone@example.com", "new@example.com"])
    assert all(e is not None for e in entries)  # rebuilt: the write made meanwhile is there


async def test_hung_redis_keeps_checks_correct_and_fast(
    faults: Faults, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = faults.env
    sup = env.services.suppressions
    cache = env.services.cache
    assert isinstance(cache, RedisCache)
    monkeypatch.setattr(cache, "retry_after_s", 1.0)  # the production value
    await _hard(env, "gone@example.com")
    assert (await check(env, "gone@example.com"))[1]["suppressed"] is True

    faults.redis.blackhole()
    took = []
    for _ in range(10):
        code, answer, t = await check(env, "gone@example.com")
        assert (code, answer["suppressed"]) == (200, True)
        took.append(t)
    assert await check_batch(env, ["gone@example.com", "fine@example.com"]) == [True, False]
    # Each check waits at most the Redis timeout (0.5 s) before answering from the database...
    assert max(took) < env.settings.redis_timeout_s + 0.5, took
    # ... and not every check pays it while Redis stays hung.
    assert sorted(took)[5] < 0.2, took
    assert sup.cache_state == "unavailable"

    faults.redis.passthrough()

    async def cache_serves_again() -> bool:
        (await check(env, "gone@example.com"))[1]
        return sup.cache_state == "ok"

    await eventually(cache_serves_again)


REBUILD_PAGE = b"ORDER BY suppressions.address, suppressions.scope"  # rebuild_cache's page query


async def test_redis_restarted_empty_mid_rebuild_never_reads_suppressed_as_clear(
    faults: Faults,
) -> None:
    """Redis restarts empty between two pages of a rebuild (while the rebuild reads the next page
    from PostgreSQL) while a check loop runs: the rebuild must not mark the cache ready without
    the entries it wrote before the restart, and no suppressed address may ever read as clear."""
    env = faults.env
    sup = env.services.suppressions
    cache = env.services.cache
    assert isinstance(cache, RedisCache)
    addresses = [f"s{i:02d}@example.com" for i in range(40)]
    for a in addresses:
        await _hard(env, a)

    wrong: list[str] = []
    stop = asyncio.Event()

    async def check_loop() -> int:
        rounds = 0
        while not stop.is_set():
            answers = await check_batch(env, addresses)
            wrong.extend(a for a, s in zip(addresses, answers, strict=True) if not s)
            rounds += 1
            await asyncio.sleep(0.005)
        return rounds

    loop = asyncio.create_task(check_loop())
    # The first page goes through; the query for the second waits in the proxy.
    page = faults.pg.arm(REBUILD_PAGE, Fault.HOLD, skip=1, times=1)
    sup.auto_rebuild = False  # this rebuild is the only one until the restart is over
    rebuild = asyncio.create_task(sup.rebuild_cache(batch=10))
    await asyncio.wait_for(page.reached.wait(), 10)
    # Redis restarts empty: every connection drops, the data is gone.
    await faults.redis.reset()
    await faults.flush_redis()

    async def back_and_cold() -> bool:  # Redis answers again (empty): checks see a cold cache
        return sup.cache_state == "cold"

    await eventually(back_and_cold)
    # The client has dropped its connections to the old Redis (as each does after one failure).
    await cache._client.connection_pool.disconnect()
    page.release()  # the rebuild goes on with its second page, into the new, empty Redis
    with contextlib.suppress(CacheUnavailable):  # it should notice the loss and give up
        await rebuild
    sup.auto_rebuild = True

    async def rebuilt() -> bool:
        await sup.wait_rebuild()
        return sup.cache_state == "ok" and await env.services.cache.generation() is not None

    await eventually(rebuilt)
    await asyncio.sleep(0.1)
    stop.set()
    rounds = await loop
    assert rounds > 3
    assert wrong == [], sorted(set(wrong))
    assert all(e is not None for e in await env.services.cache.get_many(addresses))


# ---------------------------------------------------------------- both stores down


async def test_both_stores_down_check_is_503_and_smtp_451(faults: Faults, sink: Sink) -> None:
    env = faults.env
    await _hard(env, "gone@example.com")
    assert (await check(env, "gone@example.com"))[0] == 200
    for proxy in (faults.pg, faults.redis):
        proxy.refuse()
        await proxy.reset()
    code, answer, took = await check(env, "gone@example.com")
    assert (code, answer["error"]) == (503, "unavailable")
    assert took < 3.0
    r = await env.client.post(
        "/v1/check", json={"addresses": ["gone@example.com"]}, headers=env.auth("check")
    )
    assert r.status_code == 503
    assert (await send(sink.port, message("both-down"))) == TEMPORARY

    for proxy in (faults.pg, faults.redis):
        proxy.passthrough()

    async def answers_again() -> bool:
        code, answer, _ = await check(env, "gone@example.com")
        return code == 200 and answer["suppressed"] is True

    await eventually(answers_again)
    assert (await send(sink.port, message("both-back")))[0] == 250


async def test_hung_database_with_redis_down_is_503_in_bounded_time(faults: Faults) -> None:
    """With the cache unusable, a hung database is a 503 within STOPLIST_DATABASE_TIMEOUT_S, not
    a pre-send check that waits for the driver's 30 s command timeout; it recovers by itself."""
    env = faults.env
    await _hard(env, "held@example.com")
    faults.redis.refuse()
    await faults.redis.reset()
    faults.pg.blackhole()
    code, answer, took = await check(env, "held@example.com")
    assert (code, answer["error"]) == (503, "unavailable")
    assert took < 3.0  # database_timeout_s is 1 s here
    faults.pg.passthrough()

    async def answers_again() -> bool:
        code, answer, _ = await check(env, "held@example.com")
        return code == 200 and answer["suppressed"] is True

    await eventually(answers_again)
