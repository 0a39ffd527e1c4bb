"""An entry reaching its expiry makes one ``suppression.removed`` event: the expiry sweep records
the end (``removed_at`` = the expiry, an ``expiry`` history row, the event) in one transaction,
once however often or by however many replicas it runs; a change reviving an expired entry before
the sweep came by says the end first. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import pytest_asyncio
from sqlalchemy import select

from app.container import housekeeping
from app.main import expire_entries
from app.models import Event, OutboxEvent, Suppression, utcnow
from app.settings import Settings
from app.suppression import SuppressRequest
from tests.app.test_webhooks import LOOPBACK, drain, subscribe, verified, worker_for
from tests.app.webhook_receiver import Receiver
from tests.conftest import Env, close_env, make_env


@pytest_asyncio.fixture(loop_scope="session")
async def xenv(env_settings: Settings) -> AsyncIterator[Env]:
    settings = env_settings.model_copy(update={"webhook_allowed_networks": LOOPBACK})
    e = await make_env("sqlite" if settings.is_sqlite else "postgres", settings)
    try:
        yield e
    finally:
        await close_env(e)


async def outbox_of(env: Env, address: str) -> list[tuple[str, dict[str, object]]]:
    async with env.services.db.read() as s:
        q = select(OutboxEvent.type, OutboxEvent.data).where(OutboxEvent.address == address)
        return [(t, d) for t, d in (await s.execute(q.order_by(OutboxEvent.id))).all()]


async def soft(env: Env, address: str, expires_in: timedelta) -> None:
    req = SuppressRequest(address, "soft", "mailbox_full", "api", expires_at=utcnow() + expires_in)
    await env.services.suppressions.suppress(req)


async def test_expiry_makes_one_removed_event_delivered(xenv: Env) -> None:
    sup = xenv.services.suppressions
    receiver = await Receiver().start()
    _, secret = await subscribe(xenv, receiver.url)
    await soft(xenv, "expiring@example.com", timedelta(seconds=30))
    await soft(xenv, "lasting@example.com", timedelta(days=3))
    later = utcnow() + timedelta(minutes=1)
    assert await sup.expire_due(now=later) == 1
    assert await sup.expire_due(now=later) == 0  # once
    async with xenv.services.db.read() as s:
        row = (await s.scalars(select(Suppression).where(Suppression.address.like("exp%")))).one()
        kinds = (await s.scalars(select(Event.kind).where(Event.address == row.address))).all()
    assert row.removed_at == row.expires_at
    assert list(kinds) == ["api", "expiry"]
    types = [t for t, _ in await outbox_of(xenv, "expiring@example.com")]
    assert types == ["suppression.created", "suppression.removed"]
    assert [t for t, _ in await outbox_of(xenv, "lasting@example.com")] == ["suppression.created"]
    worker = worker_for(xenv)
    try:
        await drain(worker, lambda: len(receiver.requests) >= 3)
    finally:
        await worker.stop()
        await receiver.stop()
    removed = [p for _, p in verified(receiver, secret) if p["type"] == "suppression.removed"]
    assert len(removed) == 1
    data = removed[0]["data"]
    assert data["address"] == "expiring@example.com"
    assert (data["why"], data["source"], data["outcome"]) == ("expired", "expiry", "soft")
    assert data["expired_at"].endswith("Z")


async def test_concurrent_sweeps_record_each_expiry_once(xenv: Env) -> None:
    sup = xenv.services.suppressions
    addresses = [f"many{n}@example.com" for n in range(40)]
    for a in addresses:
        await soft(xenv, a, timedelta(seconds=30))
    later = utcnow() + timedelta(minutes=1)
    counts = await asyncio.gather(*(sup.expire_due(now=later, batch=7) for _ in range(3)))
    assert sum(counts) == 40
    async with xenv.services.db.read() as s:
        q = select(OutboxEvent.address).where(OutboxEvent.type == "suppression.removed")
        removed = (await s.scalars(q)).all()
    assert sorted(removed) == sorted(addresses)


@pytest.mark.parametrize("path", ["write_suppressions", "write_suppressions_fast"])
async def test_a_revival_before_the_sweep_says_the_end_first(xenv: Env, path: str) -> None:
    # The intake's set-based path (write_suppressions_fast) must say the end as well.
    sup = xenv.services.suppressions
    await soft(xenv, "revived@example.com", timedelta(seconds=30))
    later = utcnow() + timedelta(minutes=1)
    async with xenv.services.db.write(["revived@example.com"]) as s:
        req = SuppressRequest("revived@example.com", "hard", "user_unknown", "bounce")
        await getattr(sup, path)(s, [req], later)
    assert await sup.expire_due(now=later) == 0  # nothing left to record
    types = [t for t, _ in await outbox_of(xenv, "revived@example.com")]
    changes = [t for t in types if t.startswith("suppression.")]
    assert changes == ["suppression.created", "suppression.removed", "suppression.created"]


async def test_housekeeping_runs_the_sweep(xenv: Env) -> None:
    await soft(xenv, "kept@example.com", timedelta(milliseconds=300))
    await asyncio.sleep(0.4)  # expired now
    keeper = asyncio.create_task(
        housekeeping(xenv.services, interval_s=0.05, jobs=[(3600.0, expire_entries)])
    )
    try:
        for _ in range(200):
            if len(await outbox_of(xenv, "kept@example.com")) == 2:
                break
            await asyncio.sleep(0.05)
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
    assert [t for t, _ in await outbox_of(xenv, "kept@example.com")] == [
        "suppression.created",
        "suppression.removed",
    ]


async def test_a_stopped_housekeeping_lets_a_running_job_finish(xenv: Env) -> None:
    started, finished = asyncio.Event(), []

    async def job(services: object) -> None:
        started.set()
        await asyncio.sleep(0.3)  # e.g. a transaction about to commit
        finished.append(True)

    keeper = asyncio.create_task(housekeeping(xenv.services, interval_s=0.01, jobs=[(3600.0, job)]))
    await asyncio.wait_for(started.wait(), 10)
    keeper.cancel()
    await asyncio.gather(keeper, return_exceptions=True)
    assert finished == [True]
