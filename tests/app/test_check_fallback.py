"""The pre-send check's database fallback (``SuppressionLookup.entries_from_db``; on PostgreSQL
through ``Database.driver_read``): with Redis unreachable it answers exactly what the cache
answers, prepares its statement once per connection, and turns driver errors into a 503."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy.exc import DBAPIError

from app.cache import RedisCache
from app.db import Database
from app.errors import Unavailable
from app.settings import Settings
from app.suppression import SuppressRequest
from app.suppression.lookup import SuppressionLookup
from app.suppression.repository import ACTIVE_ENTRIES_SQL
from tests.conftest import PG_ADMIN_URL, Env

REFUSED_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: every read is refused


def redis_down(db: Database) -> SuppressionLookup:
    """A lookup over the same database whose Redis refuses every connection."""
    return SuppressionLookup(db, RedisCache(REFUSED_REDIS, prefix="x:"), auto_rebuild=False)


def request(address: str, outcome: str, reason: str, **kw: object) -> SuppressRequest:
    return SuppressRequest(address=address, outcome=outcome, reason=reason, source="api", **kw)  # type: ignore[arg-type]


async def test_fallback_answers_what_the_cache_answers(env: Env) -> None:
    sup = env.services.suppressions
    soon = datetime.now(UTC) + timedelta(seconds=1)
    later = datetime.now(UTC) + timedelta(days=3)
    for req in (
        request("hard@example.com", "hard", "user_unknown"),
        request("both@example.com", "unsubscribe", "list_unsubscribe", stream="marketing"),
        request("both@example.com", "soft", "mailbox_full", expires_at=later),
        request("stream@example.com", "unsubscribe", "list_unsubscribe", stream="news"),
        request("expired@example.com", "soft", "mailbox_full", expires_at=soon),
        request("lifted@example.com", "hard", "user_unknown"),
        request("blocked.example", "manual", "customer_request", whole_domain=True),
        request("partly.example", "manual", "no_marketing", whole_domain=True, stream="marketing"),
        request("own@partly.example", "complaint", "abuse"),
    ):
        await sup.suppress(req)
    await sup.unsuppress(
        "lifted@example.com",
        stream=None,
        all_scopes=True,
        reason="test",
        actor="test",
        may_remove_complaints=False,
    )
    await asyncio.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.1)
    addresses = [
        "hard@example.com",
        "both@example.com",
        "stream@example.com",
        "expired@example.com",
        "lifted@example.com",
        "anyone@blocked.example",
        "x@partly.example",
        "own@partly.example",
        "clear@example.com",
        "hard@example.com",  # asked twice
        "not an address",
    ]
    down = redis_down(env.services.db)
    for stream in (None, "marketing", "news", "transactional"):
        from_cache = await sup.check_many(addresses, stream)
        assert sup.cache_state == "ok"
        from_db = await down.check_many(addresses, stream)
        assert down.cache_state == "unavailable"
        assert from_db == from_cache, stream
    answers = {a["address"]: a for a in await down.check_many(addresses, "marketing")}
    assert answers["both@example.com"]["outcome"] == "unsubscribe"  # the stronger of two
    assert answers["x@partly.example"]["reason"] == "no_marketing"
    assert answers["own@partly.example"]["outcome"] == "complaint"
    for clear in ("expired@example.com", "lifted@example.com", "clear@example.com"):
        assert answers[clear]["suppressed"] is False
    assert answers["not an address"]["suppressed"] is None
    single = await down.check_one("anyone@blocked.example", None)
    assert single == await sup.check_one("anyone@blocked.example", None)
    assert single["suppressed"] is True


@pytest_asyncio.fixture(loop_scope="session")
async def one_connection(pg_url: str) -> AsyncIterator[Database]:
    """A database with one pooled connection and no pre-ping: reads one after the other share
    that connection, and what a read leaves on it is what the next read gets."""
    db = Database(Settings(database_url=pg_url), pool_size=1, pre_ping=False)
    try:
        yield db
    finally:
        await db.dispose()


async def test_the_statement_is_prepared_once_per_connection(one_connection: Database) -> None:
    db = one_connection
    down = redis_down(db)
    for i in range(6):
        await down.entries_from_db([f"p{i}@example.com", "@example.com"])
    async with db.driver_read() as driver:
        rows = await driver.fetch(
            "SELECT generic_plans + custom_plans AS runs FROM pg_prepared_statements"
            " WHERE statement = $1",
            ACTIVE_ENTRIES_SQL,
        )
    assert [r["runs"] for r in rows] == [6]


async def test_a_driver_error_is_a_503_and_a_broken_connection_is_not_reused(
    one_connection: Database,
) -> None:
    db = one_connection
    down = redis_down(db)
    async with db.driver_read() as driver:
        await driver.execute("SET search_path TO nowhere")  # the table cannot be found
        pid = driver.get_server_pid()
    with pytest.raises(Unavailable):
        await down.lookup_entries(["a@example.com"])
    async with db.driver_read() as driver:
        await driver.execute("RESET search_path")
        assert driver.get_server_pid() == pid  # a statement's error leaves the connection usable
    admin = await asyncpg.connect(PG_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        with pytest.raises(DBAPIError):
            async with db.driver_read() as driver:
                await admin.execute("SELECT pg_terminate_backend($1, 5000)", pid)
                await driver.fetch("SELECT 1")
    finally:
        await admin.close()
    assert await down.entries_from_db(["a@example.com"]) == [None]  # a new connection
    async with db.driver_read() as driver:
        assert driver.get_server_pid() != pid
