"""Engine, sessions and the write discipline shared by every service.

``Database.write(addresses)`` is a transaction that commits on success. Given addresses, it also
serialises writers of those addresses (read-then-write logic such as soft-bounce counting): on
PostgreSQL with transaction-scoped advisory locks, on SQLite (one process, one writer) with a
process-wide lock that every write takes anyway.

PostgreSQL keeps every advisory lock in its shared lock table, which holds
``max_locks_per_transaction`` x (``max_connections`` + ``max_prepared_transactions``) locks for
all sessions together (6,400 by default): a transaction locking 20,000 addresses fails with "out
of shared memory". So a transaction locks at most ``MAX_ADDRESS_LOCKS`` addresses one by one;
each such writer also holds the "all addresses" lock shared, and a transaction naming more
addresses takes that one lock exclusively instead (it waits for the per-address writers and they
for it). Every lock is taken in one statement, the shared one first and the addresses in key
order, so two writers never wait for each other in a circle.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.settings import Settings

# What a database that is away, slow or refusing raises: callers at the edges catch these.
DB_ERRORS = (OperationalError, DBAPIError, OSError, asyncio.TimeoutError)


# What asyncpg raises when used directly (``Database.driver_read``), and which of it means the
# connection is unusable. ``InternalClientError`` ("cannot switch to state …; another operation
# is in progress"): a statement sent while the protocol was still taking in the server's
# termination of the connection (seen in CI, 1 in ~2,600 runs of the check fallback's test).
_DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)
_DRIVER_CONNECTION_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


def _advisory_key(address: str) -> int:
    # 63-bit signed key for pg_advisory_xact_lock(bigint)
    digest = hashlib.blake2b(address.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# Per-address locks one transaction may hold (see the module docstring).
MAX_ADDRESS_LOCKS = 1000
# The "all addresses" lock, in the two-int key space (which never meets the bigint keys above).
_ALL_ADDRESSES = {"space": 0x53544C53, "id": 1}  # "STLS"
# Output expressions are evaluated after ORDER BY, so the address locks are taken in key order,
# and after the shared lock (its CTE is scanned before the sort returns a row).
_LOCK_MANY = text(
    "WITH everything AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared(:space, :id)) "
    "SELECT pg_advisory_xact_lock(k) FROM everything, unnest(CAST(:keys AS bigint[])) AS k "
    "ORDER BY k"
)
_LOCK_ALL = text("SELECT pg_advisory_xact_lock(:space, :id)")


def pooler_connect_args(pooler: str) -> dict[str, Any]:
    """Driver arguments for a connection pooler in front of PostgreSQL.

    PgBouncer in transaction pooling mode hands each transaction to any server connection, so a
    statement prepared in one transaction may be missing (or, named ``__asyncpg_stmt_1__`` by
    another client, already taken) in the next: asyncpg's and SQLAlchemy's statement caches are off
    and every statement gets a name of its own. (asyncpg sends Parse/Describe with Flush, not Sync,
    so a statement is prepared and executed on one server connection even outside a transaction.)
    """
    if pooler != "pgbouncer":
        return {}
    return {
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": lambda: f"__stoplist_{uuid.uuid4().hex}__",
    }


class Database:
    def __init__(
        self, settings: Settings, *, pool_size: int | None = None, pre_ping: bool = True
    ) -> None:
        """``pre_ping=False`` for engines whose callers retry anyway (the intake's): the ping
        costs up to three round trips per checkout, and a dead connection then fails one attempt
        (and invalidates the pool) instead."""
        self.settings = settings
        self.dialect = "sqlite" if settings.is_sqlite else "postgresql"
        self.engine = self._make_engine(
            settings, pool_size or settings.database_pool_size, pre_ping=pre_ping
        )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._sqlite_write_lock = asyncio.Lock()

    @staticmethod
    def _make_engine(settings: Settings, pool_size: int, *, pre_ping: bool) -> AsyncEngine:
        if settings.is_sqlite:
            path = settings.sqlite_path()
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
            engine = create_async_engine(
                settings.database_url,
                connect_args={"timeout": 30},
                pool_size=pool_size,
                hide_parameters=True,  # as below
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
            # A database error's text (logged, e.g. by the SMTP sink's 451) must not carry the
            # statement's parameters: raw bounces, recipients' addresses, key hashes.
            hide_parameters=True,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=pre_ping,
            pool_timeout=timeout,
            connect_args={
                "timeout": timeout,
                "command_timeout": max(timeout, 30.0),
                "server_settings": {"application_name": "stoplist"},
                **pooler_connect_args(settings.database_pooler),
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
            if len(keys) > MAX_ADDRESS_LOCKS:
                await session.execute(_LOCK_ALL, _ALL_ADDRESSES)
            elif keys:
                await session.execute(_LOCK_MANY, {**_ALL_ADDRESSES, "keys": keys})
            yield session

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection on which each statement commits by itself: a one-statement write is one
        round trip, durable when it returns. Takes no address locks (SQLite: the write lock)."""
        if self.dialect == "sqlite":
            async with self._sqlite_write_lock, self.engine.connect() as conn:
                yield await conn.execution_options(isolation_level="AUTOCOMMIT")
            return
        async with self.engine.connect() as conn:
            yield await conn.execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def driver_read(self) -> AsyncIterator[Any]:
        """PostgreSQL: a pooled connection's asyncpg connection, outside any transaction, for a hot
        read that SQLAlchemy's layers would cost more than the query (the check's database
        fallback). asyncpg prepares each statement once per connection (its statement cache; off
        behind PgBouncer, see ``pooler_connect_args``). Its errors leave here as ``DBAPIError``
        (one of ``DB_ERRORS``); a connection cut off mid-read is closed, never reused."""
        async with self.engine.connect() as conn:
            driver: Any = (await conn.get_raw_connection()).driver_connection
            try:
                yield driver
            except asyncio.CancelledError:
                await conn.invalidate()
                raise
            except _DRIVER_ERRORS as exc:
                if driver.is_closed() or isinstance(exc, _DRIVER_CONNECTION_ERRORS):
                    await conn.invalidate()
                raise DBAPIError("driver read", None, exc) from exc

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await asyncio.wait_for(
                conn.execute(text("SELECT 1")), timeout=self.settings.database_timeout_s
            )

    async def dispose(self) -> None:
        await self.engine.dispose()


def run_migrations(settings: Settings) -> None:
    """``alembic upgrade head`` against the configured database (synchronous: run at start-up)."""
    import logging

    # Before alembic is imported: it logs a line per plugin as it loads them.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

    from alembic import command
    from alembic.config import Config

    # Shipped inside the package (app/migrations; alembic/ in the source tree), so an
    # installed wheel can migrate from any folder; STOPLIST_MIGRATIONS_DIR still overrides it.
    scripts = os.environ.get("STOPLIST_MIGRATIONS_DIR") or str(
        Path(__file__).resolve().parent / "migrations"
    )
    cfg = Config()
    cfg.set_main_option("script_location", scripts)
    cfg.set_main_option("sqlalchemy.url", settings.database_url)
    cfg.attributes["configure_logging"] = False
    cfg.attributes["connect_args"] = pooler_connect_args(settings.database_pooler)
    command.upgrade(cfg, "head")
