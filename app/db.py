"""Engine, sessions and the write discipline shared by every service.

Writes to one address are serialised: on PostgreSQL by a transaction-scoped advisory lock keyed on
the address, on SQLite (one process, one writer) by a process-wide lock. That makes the per-address
revision sum a strictly growing version the cache can trust.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.settings import Settings


def _advisory_key(address: str) -> int:
    # 63-bit signed key for pg_advisory_xact_lock(bigint)
    digest = hashlib.blake2b(address.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Database:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dialect = "sqlite" if settings.is_sqlite else "postgresql"
        self.engine = self._make_engine(settings)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._sqlite_write_lock = asyncio.Lock()

    @staticmethod
    def _make_engine(settings: Settings) -> AsyncEngine:
        if settings.is_sqlite:
            path = settings.sqlite_path()
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
            engine = create_async_engine(
                settings.database_url,
                connect_args={"timeout": 30},
                pool_size=settings.database_pool_size,
            )

            @event.listens_for(engine.sync_engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")  # acknowledged mail must survive power loss
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

            return engine
        timeout = settings.database_timeout_s
        return create_async_engine(
            settings.database_url,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_pool_size,
            pool_pre_ping=True,
            pool_timeout=timeout,
            connect_args={
                "timeout": timeout,
                "command_timeout": max(timeout, 30.0),
                "server_settings": {"application_name": "stoplist"},
            },
        )

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def write(self, addresses: Iterable[str] = ()) -> AsyncIterator[AsyncSession]:
        """A transaction that holds the per-address write locks; commits on success."""
        keys = sorted({_advisory_key(a) for a in addresses})
        if self.dialect == "sqlite":
            async with self._sqlite_write_lock, self.sessions() as session, session.begin():
                yield session
            return
        async with self.sessions() as session, session.begin():
            for key in keys:
                await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await asyncio.wait_for(
                conn.execute(text("SELECT 1")), timeout=self.settings.database_timeout_s
            )

    async def dispose(self) -> None:
        await self.engine.dispose()


def run_migrations(settings: Settings) -> None:
    """``alembic upgrade head`` against the configured database (synchronous: run at start-up)."""
    from alembic.config import Config

    from alembic import command

    root = Path(__file__).resolve().parent.parent
    cfg = Config()
    cfg.set_main_option("script_location", str(root / "alembic"))
    cfg.set_main_option("sqlalchemy.url", settings.database_url)
    cfg.attributes["configure_logging"] = False
    command.upgrade(cfg, "head")
