"""Shared fixtures: every service test runs on the embedded default (SQLite + in-process cache) and
on real PostgreSQL + Redis.

PostgreSQL and Redis are taken from ``STOPLIST_TEST_PG_URL`` (default the local server's ``test``
database host) and ``STOPLIST_TEST_REDIS_URL`` (default redis://127.0.0.1:6379/15). Where they are
absent those tests skip with the reason, unless ``STOPLIST_TEST_REQUIRE_SERVICES=1`` (CI), which
makes them fail instead.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text

from app.container import Services, build_services
from app.db import run_migrations
from app.intake.parse_pool import ParsingPool
from app.main import create_app
from app.settings import Settings

PG_ADMIN_URL = os.environ.get(
    "STOPLIST_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("STOPLIST_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE = os.environ.get("STOPLIST_TEST_REQUIRE_SERVICES") == "1"
TABLES = (
    "suppressions",
    "events",
    "audit_log",
    "api_keys",
    "inbound_messages",
    "console_imports",
    "delivery_events",
    "delivery_event_errors",
    "sns_subscriptions",
    "webhook_tokens",
    "rate_counts",
    "console_sessions",
)
TABLES += ("webhook_deliveries", "webhook_subscriptions", "outbox")


def _unavailable(what: str, exc: BaseException) -> None:
    message = f"{what} unreachable: {exc!r}"
    if REQUIRE:
        pytest.fail(message + " (STOPLIST_TEST_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)


async def _pg_available() -> BaseException | None:
    import asyncpg

    dsn = PG_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://")
    try:
        conn = await asyncio.wait_for(asyncpg.connect(dsn), 3)
        await conn.close()
    except Exception as exc:
        return exc
    return None


async def _redis_available() -> BaseException | None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        return exc
    finally:
        await client.aclose()
    return None


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pg_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for this test session, migrated to head."""
    problem = await _pg_available()
    if problem is not None:
        _unavailable("PostgreSQL", problem)
    import asyncpg

    name = f"stoplist_test_{os.getpid()}"
    dsn = PG_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    await asyncio.to_thread(run_migrations, Settings(database_url=url))
    yield url
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def redis_url() -> str:
    problem = await _redis_available()
    if problem is not None:
        _unavailable("Redis", problem)
    return REDIS_URL


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path: Path = tmp_path_factory.mktemp("db") / "stoplist.db"
    url = f"sqlite+aiosqlite:///{path}"
    run_migrations(Settings(database_url=url))
    yield url


@pytest.fixture(scope="session")
def parse_pool() -> Iterator[ParsingPool]:
    """One parse worker process shared by the intake tests."""
    pool = ParsingPool(workers=1, timeout_s=5.0)
    yield pool
    pool.close()


@dataclass
class Env:
    """A running set of services plus an HTTP client on the app."""

    name: str
    settings: Settings
    services: Services
    client: httpx.AsyncClient
    keys: dict[str, str]

    def auth(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}


async def _truncate(services: Services) -> None:
    async with services.db.engine.begin() as conn:
        if services.db.dialect == "postgresql":
            await conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY"))
        else:
            for table in TABLES:
                await conn.execute(text(f"DELETE FROM {table}"))


async def make_env(name: str, settings: Settings) -> Env:
    services = build_services(settings)
    await _truncate(services)
    await services.cache.clear()
    await services.suppressions.rebuild_cache()
    keys = {}
    for scope in ("check", "read", "write", "admin"):
        _, keys[scope] = await services.keys.create(f"test-{scope}", scope, actor="tests")
    app = create_app(settings, services=services)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    return Env(name, settings, services, client, keys)


async def close_env(env: Env) -> None:
    await env.client.aclose()
    await env.services.suppressions.wait_rebuild()
    await env.services.keys.close()
    await env.services.cache.clear()
    await env.services.cache.close()
    await env.services.db.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def env_settings(request: pytest.FixtureRequest, sqlite_url: str) -> Settings:
    if request.param == "sqlite":
        return Settings(database_url=sqlite_url, redis_url=None)
    pg = request.getfixturevalue("pg_url")
    rd = request.getfixturevalue("redis_url")
    return Settings(database_url=pg, redis_url=rd, redis_prefix=f"sltest-{uuid.uuid4().hex[:8]}:")


@pytest_asyncio.fixture(loop_scope="session")
async def env(env_settings: Settings) -> AsyncIterator[Env]:
    """The service on the embedded default and on PostgreSQL + Redis."""
    e = await make_env("sqlite" if env_settings.is_sqlite else "postgres", env_settings)
    try:
        yield e
    finally:
        await close_env(e)


@pytest_asyncio.fixture(loop_scope="session")
async def pg_env(pg_url: str, redis_url: str) -> AsyncIterator[Env]:
    """PostgreSQL + Redis only (cache fault tests)."""
    settings = Settings(
        database_url=pg_url, redis_url=redis_url, redis_prefix=f"sltest-{uuid.uuid4().hex[:8]}:"
    )
    e = await make_env("postgres", settings)
    try:
        yield e
    finally:
        await close_env(e)


@pytest_asyncio.fixture(loop_scope="session")
async def sqlite_env(sqlite_url: str) -> AsyncIterator[Env]:
    """The embedded default only: for tests of the SMTP dialogue, where the store plays no part."""
    e = await make_env("sqlite", Settings(database_url=sqlite_url, redis_url=None))
    try:
        yield e
    finally:
        await close_env(e)
