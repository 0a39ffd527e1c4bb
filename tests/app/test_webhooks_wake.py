"""How the delivery worker learns of work, and how it shares it: PostgreSQL's ``NOTIFY`` wakes a
worker in another process at once (an outbox row written by a bare connection, which no
in-process hook sees), polling still finds rows when the notification is lost, an idle worker
backs off while no subscription exists, two workers share one queue with ``SKIP LOCKED`` (each
event once, per-address order kept), two sequencers racing number each row once, and a stop gives
back what was claimed but not sent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy import select

from app.db import Database
from app.models import WebhookDelivery, utcnow
from app.settings import Settings
from app.suppression import SuppressRequest
from app.webhooks import repository
from tests.app.test_webhooks import LOOPBACK, put, subscribe, verified, worker_for
from tests.app.webhook_receiver import Receiver
from tests.conftest import Env, close_env, make_env


def _settings(base: Settings) -> Settings:
    return base.model_copy(
        update={"webhook_allowed_networks": LOOPBACK, "webhook_retry_delays_s": [0.05, 0.05]}
    )


@pytest_asyncio.fixture(loop_scope="session")
async def wenv(env_settings: Settings) -> AsyncIterator[Env]:
    settings = _settings(env_settings)
    e = await make_env("sqlite" if settings.is_sqlite else "postgres", settings)
    try:
        yield e
    finally:
        await close_env(e)


@pytest_asyncio.fixture(loop_scope="session")
async def pgenv(pg_url: str) -> AsyncIterator[Env]:
    e = await make_env("postgres", _settings(Settings(database_url=pg_url, redis_url=None)))
    try:
        yield e
    finally:
        await close_env(e)


async def until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def bare_outbox_row(env: Env, address: str) -> None:
    """An outbox row committed by a connection of its own, as another process would."""
    conn = await asyncpg.connect(env.settings.database_url.replace("+asyncpg", ""))
    try:
        await conn.execute(
            "INSERT INTO outbox (created_at, type, address, scope, data)"
            " VALUES (now(), 'suppression.created', $1, 'global', $2::jsonb)",
            address,
            f'{{"schema_version": 1, "address": "{address}", "scope": "global"}}',
        )
    finally:
        await conn.close()


async def test_notify_wakes_a_worker_another_process_wrote_for(pgenv: Env) -> None:
    receiver = await Receiver().start()
    _, secret = await subscribe(pgenv, receiver.url)
    worker = worker_for(pgenv)
    worker.idle_s = 3600.0  # it never polls within the test: only NOTIFY can wake it
    worker.start()
    try:
        await until(lambda: worker._listener is not None and worker._listener.listening)
        await asyncio.sleep(0.3)  # its first rounds are over; it waits now
        await bare_outbox_row(pgenv, "notified@example.com")
        await until(lambda: len(receiver.requests) >= 1)
    finally:
        await worker.stop()
        await receiver.stop()
    assert [p["data"]["address"] for _, p in verified(receiver, secret)] == ["notified@example.com"]


async def test_a_lost_notification_is_made_up_by_polling(pgenv: Env) -> None:
    receiver = await Receiver().start()
    await subscribe(pgenv, receiver.url)
    worker = worker_for(pgenv)
    worker.idle_s = 0.2
    worker.start()
    admin = await asyncpg.connect(pgenv.settings.database_url.replace("+asyncpg", ""))
    try:
        await until(lambda: worker._listener is not None and worker._listener.listening)
        # The listening connection dies: whatever it would have been told is lost.
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
        await bare_outbox_row(pgenv, "lost@example.com")
        await until(lambda: len(receiver.requests) >= 1)
        # It listens again (after its reconnect delay), and is told again.
        await until(lambda: worker._listener is not None and worker._listener.listening, 20)
        await bare_outbox_row(pgenv, "again@example.com")
        await until(lambda: len(receiver.requests) >= 2)
    finally:
        await admin.close()
        await worker.stop()
        await receiver.stop()


async def test_without_subscriptions_the_worker_backs_off(
    wenv: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    rounds = 0
    real = repository.sequence

    async def counted(*args: Any, **kwargs: Any) -> int:
        nonlocal rounds
        rounds += 1
        return await real(*args, **kwargs)

    monkeypatch.setattr(repository, "sequence", counted)
    worker = worker_for(wenv)
    worker.idle_s = 0.05  # 30 rounds in 1.5 s if it did not back off
    worker.start()
    receiver = await Receiver().start()
    try:
        await asyncio.sleep(1.5)
        assert rounds <= 6
        # A subscription and a change: delivered (the commit wakes it).
        _, secret = await subscribe(wenv, receiver.url)
        await put(wenv, "backoff@example.com")
        await until(lambda: len(receiver.requests) >= 1)
    finally:
        await worker.stop()
        await receiver.stop()
    assert [p["type"] for _, p in verified(receiver, secret)] == ["suppression.created"]


async def test_two_workers_share_the_queue_each_event_once_in_order(pgenv: Env) -> None:
    receiver = await Receiver().start()
    _, secret = await subscribe(pgenv, receiver.url)
    workers = [worker_for(pgenv, webhook_subscription_concurrency=2) for _ in range(2)]
    sent = [0, 0]
    for n, w in enumerate(workers):
        real_post = w.sender.post

        async def post(*args: Any, _n: int = n, _real: Any = real_post, **kw: Any) -> Any:
            sent[_n] += 1
            return await _real(*args, **kw)

        w.sender.post = post  # type: ignore[method-assign]
        w.start()
    sup = pgenv.services.suppressions
    addresses = [f"share{n}@example.com" for n in range(20)]
    try:
        for outcome, reason in (("hard", "user_unknown"), ("complaint", "abuse")):
            for a in addresses:
                await sup.suppress(SuppressRequest(a, outcome, reason, "api"))
        for a in addresses:
            await sup.unsuppress(
                a,
                stream=None,
                all_scopes=True,
                reason="test",
                actor="t",
                may_remove_complaints=True,
            )
        await until(lambda: len(receiver.requests) >= 60, 30)
        await asyncio.sleep(0.3)  # nothing more arrives
    finally:
        for w in workers:
            await w.stop()
        await receiver.stop()
    got = verified(receiver, secret)
    assert len(got) == 60 and len({msg_id for msg_id, _ in got}) == 60
    for a in addresses:
        types = [p["type"] for _, p in got if p["data"]["address"] == a]
        assert types == ["suppression.created", "suppression.updated", "suppression.removed"]
    assert sent[0] > 0 and sent[1] > 0, sent


async def test_two_sequencers_never_number_a_row_twice(pgenv: Env) -> None:
    """Sequencers racing while rows are committed: every row gets one position and one
    delivery per subscription (a lock granted after the numbering statement's snapshot gave the
    rows the last holder had just numbered a second delivery)."""
    await subscribe(pgenv, "http://127.0.0.1:9/hook")
    conn = await asyncpg.connect(pgenv.settings.database_url.replace("+asyncpg", ""))
    dbs = [Database(pgenv.settings, pool_size=1, pre_ping=False) for _ in range(2)]
    done = asyncio.Event()

    async def write() -> None:
        for n in range(300):
            await conn.execute(
                "INSERT INTO outbox (created_at, type, address, scope, data)"
                " SELECT now(), 'suppression.created', 'race' || g || '-' || $1::text, 'global',"
                " '{}'::jsonb FROM generate_series(1, 5) AS g",
                str(n),
            )
        done.set()

    async def sequence(db: Database) -> None:
        while not done.is_set():
            async with db.write() as s:
                await repository.sequence(s, "postgresql", utcnow(), 1000)
        async with db.write() as s:  # what was committed last
            await repository.sequence(s, "postgresql", utcnow(), 1000)

    try:
        await asyncio.gather(write(), sequence(dbs[0]), sequence(dbs[1]))
        rows, positions, deliveries, twice = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT position),"
            " (SELECT count(*) FROM webhook_deliveries),"
            " (SELECT count(*) FROM (SELECT 1 FROM webhook_deliveries GROUP BY outbox_id"
            "  HAVING count(*) > 1) AS d) FROM outbox"
        )
    finally:
        await conn.close()
        for db in dbs:
            await db.dispose()
    assert (rows, positions, deliveries, twice) == (1500, 1500, 1500, 0)


async def test_stop_gives_back_what_was_claimed_but_not_sent(wenv: Env) -> None:
    slow = await Receiver().start()
    slow.hold = asyncio.Event()
    await subscribe(wenv, slow.url)
    worker = worker_for(wenv, webhook_subscription_concurrency=1, webhook_timeout_s=1.0)
    worker.start()
    try:
        for n in range(3):
            await put(wenv, f"held{n}@example.com")
        await until(lambda: len(slow.requests) >= 1)
        await until(lambda: sum(len(q) for q in worker._queued.values()) >= 1)
    finally:
        await worker.stop()  # one request in flight (times out), one claimed ahead
        slow.hold.set()
        await slow.stop()
    q = select(WebhookDelivery.attempts, WebhookDelivery.state, WebhookDelivery.next_attempt_at)
    async with wenv.services.db.read() as s:
        rows = (await s.execute(q)).all()
    # The request in flight timed out (1 attempt, retried later); the one claimed ahead is due
    # again with no attempt counted (a third may not be sequenced yet). None lost or sent.
    assert {st for _, st, _ in rows} == {"pending"}
    assert sorted(a for a, _, _ in rows)[-2:] == [0, 1]
    assert all(at <= utcnow() for a, _, at in rows if a == 0)
    assert len(slow.requests) == 1
