"""Webhook intake against a PostgreSQL reached through a fault proxy (``tests.faultproxy``):
2xx only after the commit, 503 otherwise, and the sender's retry is recorded exactly once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest_asyncio
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from app.db import Database
from app.models import DeliveryEvent
from app.settings import Settings
from tests.app.events_support import Hooks, make_hooks, samples, sign_mailgun
from tests.conftest import close_env
from tests.faultproxy import Fault, FaultProxy

INSERT_EVENTS = b"INSERT INTO delivery_events"


@dataclass
class Faulty:
    hooks: Hooks
    pg: FaultProxy
    direct: Database

    async def committed(self) -> int:
        async with self.direct.read() as s:
            return int((await s.execute(select(func.count(DeliveryEvent.id)))).scalar_one())


@pytest_asyncio.fixture(loop_scope="session")
async def faulty(pg_url: str, redis_url: str) -> AsyncIterator[Faulty]:
    at = make_url(pg_url)
    pg = await FaultProxy(at.host or "", at.port or 5432, protocol="postgres").start()
    settings = Settings(
        database_url=at.set(host="127.0.0.1", port=pg.port).render_as_string(False),
        redis_url=redis_url,
        redis_prefix=f"sltest-{uuid.uuid4().hex[:8]}:",
        database_timeout_s=1.0,
        auth_cache_ttl_s=600,
    )
    hooks = await make_hooks("postgres", settings)
    direct = Database(Settings(database_url=pg_url))
    try:
        yield Faulty(hooks, pg, direct)
    finally:
        pg.clear()
        pg.passthrough()
        await hooks.client.aclose()
        await close_env(hooks.env)
        await direct.dispose()
        await pg.aclose()


async def test_database_down_is_503_then_the_retry_is_recorded(faulty: Faulty) -> None:
    body = samples("sendgrid")[0][0]
    faulty.pg.refuse()
    await faulty.pg.reset()
    r = await faulty.hooks.send("sendgrid", body)
    assert (r.status_code, r.json()["error"]) == (503, "unavailable")
    assert await faulty.committed() == 0

    faulty.pg.passthrough()
    r = await faulty.hooks.send("sendgrid", body)
    assert r.status_code == 200, r.text
    assert r.json()["new"] == await faulty.committed() > 0


async def test_a_commit_that_never_happens_is_503_and_nothing_is_kept(faulty: Faulty) -> None:
    body = sign_mailgun(samples("mailgun")[0][0])
    cut = faulty.pg.arm(INSERT_EVENTS, Fault.UNCOMMITTED)
    r = await faulty.hooks.post("mailgun", body)
    assert r.status_code == 503, r.text
    assert cut.fired >= 1
    assert await faulty.committed() == 0
    faulty.pg.clear()
    # Mailgun retries with the same token: it was claimed in the rolled-back transaction only.
    r = await faulty.hooks.post("mailgun", body)
    assert (r.status_code, r.json()["new"]) == (200, 1)


async def test_a_lost_reply_is_503_and_the_retry_is_a_duplicate(faulty: Faulty) -> None:
    body = samples("postmark")[0][0]
    lost = faulty.pg.arm(b"COMMIT", Fault.LOSE_REPLY, times=1, after=INSERT_EVENTS)
    r = await faulty.hooks.send("postmark", body)
    assert r.status_code == 503, r.text
    assert lost.fired == 1
    assert await faulty.committed() == 1  # committed, but the sender could not know
    faulty.pg.clear()
    r = await faulty.hooks.send("postmark", body)
    assert (r.status_code, r.json()["new"], r.json()["duplicate"]) == (200, 0, 1)
    assert await faulty.committed() == 1
