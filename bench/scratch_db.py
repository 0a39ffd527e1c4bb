"""A scratch PostgreSQL database for one benchmark run: created fresh (a run that was killed may
have left it behind), migrated, and dropped at the end, whoever is still connected."""

from __future__ import annotations

import asyncio

import asyncpg

from app.db import run_migrations
from app.settings import Settings


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _admin(pg_url: str, sql: str) -> None:
    conn = await asyncpg.connect(_plain(pg_url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_scratch_database(pg_url: str, name: str) -> str:
    """Database ``name`` on ``pg_url``'s server, empty and migrated: its SQLAlchemy URL."""
    await drop_scratch_database(pg_url, name)
    await _admin(pg_url, f'CREATE DATABASE "{name}"')
    url = pg_url.rsplit("/", 1)[0] + "/" + name
    await asyncio.to_thread(run_migrations, Settings(database_url=url, redis_url=None))
    return url


async def drop_scratch_database(pg_url: str, name: str) -> None:
    await _admin(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
