"""Stoplist behind PgBouncer in transaction pooling mode (``STOPLIST_DATABASE_POOLER=pgbouncer``):
migrations, checks, suppressions, DSN intake and CSV import through a real PgBouncer started by the
test, with fewer server connections than clients so transactions of different clients share them."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.db import Database, run_migrations
from app.intake import Intake, StoredMessage
from app.intake.parse_pool import ParsingPool
from app.settings import Settings
from app.suppression import SuppressRequest
from tests.app.test_check_fallback import redis_down
from tests.app.test_smtp import HARD_BOUNCE
from tests.conftest import PG_ADMIN_URL, Env, _pg_available, _unavailable, close_env, make_env
from tests.servers import PgBouncer


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bouncer_url() -> AsyncIterator[str]:
    """A database of this module's own, migrated through a PgBouncer of its own."""
    problem = await _pg_available()
    if problem is not None:
        _unavailable("PostgreSQL", problem)
    import asyncpg

    try:
        bouncer = PgBouncer(pool_size=2).start()
    except (FileNotFoundError, RuntimeError) as exc:
        _unavailable("pgbouncer", exc)
    name = f"stoplist_pgb_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    dsn = PG_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    url = bouncer.url(name)
    try:
        await asyncio.to_thread(
            run_migrations, Settings(database_url=url, database_pooler="pgbouncer")
        )
        yield url
    finally:
        bouncer.stop()
        conn = await asyncpg.connect(dsn)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


@pytest_asyncio.fixture(loop_scope="session")
async def bouncer_env(bouncer_url: str, redis_url: str) -> AsyncIterator[Env]:
    settings = Settings(
        database_url=bouncer_url,
        database_pooler="pgbouncer",
        redis_url=redis_url,
        redis_prefix=f"sltest-{uuid.uuid4().hex[:8]}:",
    )
    e = await make_env("pgbouncer", settings)
    try:
        yield e
    finally:
        await close_env(e)


async def _statement_again_while_its_server_is_busy(settings: Settings) -> None:
    """Client ``a`` runs a statement, then runs it again while ``b`` holds, in a transaction, the
    server connection ``a`` used: PgBouncer gives ``a`` the other server connection."""
    db = Database(settings, pool_size=2, pre_ping=False)
    query = text("SELECT CAST(:n AS int) + 1")
    try:
        async with db.engine.connect() as a, db.engine.connect() as b:
            await a.execute(query, {"n": 1})
            await a.commit()
            await b.execute(text("SELECT 1"))  # b's transaction stays open
            assert (await a.execute(query, {"n": 2})).scalar_one() == 3
            await a.commit()
            await b.commit()
    finally:
        await db.dispose()


async def test_without_the_setting_a_cached_statement_is_missing(bouncer_url: str) -> None:
    # The trap the setting exists for: a statement prepared (and cached) in one transaction is
    # gone when the next transaction of the same client runs on another server connection.
    database = bouncer_url.rsplit("/", 1)[1]
    for pooler, fails in (("none", True), ("pgbouncer", False)):
        bouncer = PgBouncer(pool_size=2).start()
        try:
            settings = Settings(database_url=bouncer.url(database), database_pooler=pooler)
            if fails:
                with pytest.raises(DBAPIError, match="does not exist"):
                    await _statement_again_while_its_server_is_busy(settings)
            else:
                await _statement_again_while_its_server_is_busy(settings)
        finally:
            bouncer.stop()


async def test_suppress_and_check_concurrently(bouncer_env: Env) -> None:
    env = bouncer_env
    addresses = [f"user{i}@example.com" for i in range(40)]

    async def suppress(address: str) -> int:
        r = await env.client.put(
            f"/v1/suppressions/{address}",
            json={"outcome": "hard", "reason": "user_unknown"},
            headers=env.auth("write"),
        )
        return r.status_code

    assert set(await asyncio.gather(*(suppress(a) for a in addresses[::2]))) <= {200, 201}
    r = await env.client.post("/v1/check", json={"addresses": addresses}, headers=env.auth("check"))
    assert r.status_code == 200, r.text
    assert [x["suppressed"] for x in r.json()["results"]] == [i % 2 == 0 for i in range(40)]
    # The database fallback (cold cache) runs through PgBouncer too.
    await env.services.cache.mark_cold()
    singles = await asyncio.gather(
        *(
            env.client.get("/v1/check", params={"address": a}, headers=env.auth("check"))
            for a in addresses[:10]
        )
    )
    assert [s.json()["suppressed"] for s in singles] == [i % 2 == 0 for i in range(10)]
    r = await env.client.delete(
        f"/v1/suppressions/{addresses[0]}", params={"reason": "test"}, headers=env.auth("write")
    )
    assert r.status_code in (200, 204), r.text
    r = await env.client.get(
        "/v1/check", params={"address": addresses[0]}, headers=env.auth("check")
    )
    assert r.json()["suppressed"] is False


async def test_dsn_intake(bouncer_env: Env) -> None:
    env = bouncer_env
    intake = Intake(env.services, pool=ParsingPool(workers=1, inline_max_bytes=1 << 20))
    rcpt = ["bounce@bounces.example.net"]
    stored = await asyncio.gather(
        *(
            intake.store.store(
                mail_from="", rcpt_to=[f"b{i}@bounces.example.net"], peer=None, raw=HARD_BOUNCE
            )
            for i in range(8)
        )
    )
    assert all(s.id is not None for s in stored)
    first = stored[0].id
    assert first is not None
    claimed = await intake.store.claim_ids([first], 300)
    await intake.processor.process(
        StoredMessage(first, HARD_BOUNCE, "", rcpt, None, claimed[first])
    )
    r = await env.client.get(
        "/v1/check", params={"address": "carol@example.net"}, headers=env.auth("check")
    )
    assert (r.json()["suppressed"], r.json()["outcome"]) == (True, "hard")


async def test_csv_import_and_export(bouncer_env: Env) -> None:
    env = bouncer_env
    rows = "".join(f"imp{i}@example.com,hard,user_unknown\n" for i in range(500))
    r = await env.client.post(
        "/v1/suppressions/import",
        content=("address,outcome,reason\n" + rows).encode(),
        headers=env.auth("write") | {"content-type": "text/csv"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["inserted"] == 500
    r = await env.client.post(
        "/v1/check",
        json={"addresses": ["imp7@example.com", "other@example.com"]},
        headers=env.auth("check"),
    )
    assert [x["suppressed"] for x in r.json()["results"]] == [True, False]
    r = await env.client.get("/v1/suppressions/export", headers=env.auth("read"))
    assert r.status_code == 200
    assert r.text.count("@example.com") == 500


async def _driver_read_again_while_its_server_is_busy(settings: Settings) -> None:
    """The check's database fallback (``Database.driver_read``, asyncpg used directly) reads,
    then reads again while another client holds, in a transaction, the server connection the
    first read used."""
    db = Database(settings, pool_size=2, pre_ping=False)
    down = redis_down(db)
    try:
        assert await down.entries_from_db(["a@example.com", "@example.com"]) == [None, None]
        async with db.engine.connect() as b:
            await b.execute(text("SELECT 1"))  # b's transaction stays open
            assert await down.entries_from_db(["b@example.com", "@example.com"]) == [None, None]
            await b.commit()
    finally:
        await db.dispose()


async def test_the_fallback_read_works_behind_pgbouncer_with_the_setting(bouncer_url: str) -> None:
    # (Unlike SQLAlchemy's statement cache above, the trap did not reproduce for this read
    # without the setting in this arrangement, so only the working side is asserted.)
    database = bouncer_url.rsplit("/", 1)[1]
    bouncer = PgBouncer(pool_size=2).start()
    try:
        settings = Settings(database_url=bouncer.url(database), database_pooler="pgbouncer")
        await _driver_read_again_while_its_server_is_busy(settings)
    finally:
        bouncer.stop()


async def test_batch_checks_from_the_database_through_pgbouncer(bouncer_env: Env) -> None:
    """Concurrent batches with Redis unreachable share two server connections."""
    env = bouncer_env
    sup = env.services.suppressions
    suppressed = [f"fb{i}@example.com" for i in range(0, 300, 3)]
    for a in suppressed:
        await sup.suppress(
            SuppressRequest(address=a, outcome="hard", reason="user_unknown", source="bounce")
        )
    down = redis_down(env.services.db)
    batches = [[f"fb{i}@example.com" for i in range(k, 300, 7)] for k in range(7)]
    answers = await asyncio.gather(*(down.check_many(b, None) for b in batches))
    for batch, got in zip(batches, answers, strict=True):
        assert [x["suppressed"] for x in got] == [a in suppressed for a in batch]
