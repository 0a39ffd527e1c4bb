"""Per-address write locks on PostgreSQL stay within the shared lock table, whatever the batch.

PostgreSQL's lock table holds ``max_locks_per_transaction`` x (``max_connections`` +
``max_prepared_transactions``) locks for every session together; a transaction that took one
advisory lock per address of a bigger batch failed with "out of shared memory" (``app.db``).
The table has some slack beyond that product, so the batches here are four times as large.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy import text

from app.db import MAX_ADDRESS_LOCKS, Database
from app.events import EventStore
from app.settings import Settings
from events import Batch, parse_pmta
from tests.conftest import Env

pytestmark = pytest.mark.asyncio(loop_scope="session")

HEADER = "type,timeLogged,rcpt,dsnStatus,dsnDiag,dsnMta"


@pytest_asyncio.fixture(loop_scope="session")
async def db(pg_url: str) -> AsyncIterator[Database]:
    database = Database(Settings(database_url=pg_url), pool_size=4)
    try:
        yield database
    finally:
        await database.dispose()


async def lock_table_size(db: Database) -> int:
    async with db.read() as s:
        row = (
            await s.execute(
                text(
                    "SELECT current_setting('max_locks_per_transaction')::int * "
                    "(current_setting('max_connections')::int + "
                    "current_setting('max_prepared_transactions')::int)"
                )
            )
        ).scalar_one()
    return int(row)


async def advisory_locks_held(s: object) -> int:
    found = await s.execute(  # type: ignore[attr-defined]
        text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
            "AND pid = pg_backend_pid() AND granted"
        )
    )
    return int(found.scalar_one())


async def waiting_for_advisory_lock(db: Database) -> bool:
    async with db.read() as s:
        found = await s.execute(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        )
        return int(found.scalar_one()) > 0


async def until_waiting(db: Database) -> None:
    for _ in range(500):
        if await waiting_for_advisory_lock(db):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the second writer never waited for the lock")


async def test_more_addresses_than_the_lock_table_holds(db: Database) -> None:
    size = await lock_table_size(db)
    addresses = [f"user{i}@example.net" for i in range(4 * size)]
    async with db.write(addresses) as s:
        held = await advisory_locks_held(s)
    assert held == 1  # the "all addresses" lock alone


async def test_a_batch_within_the_bound_locks_each_address(db: Database) -> None:
    addresses = [f"user{i}@example.net" for i in range(MAX_ADDRESS_LOCKS)]
    async with db.write(addresses) as s:
        held = await advisory_locks_held(s)
    assert held == MAX_ADDRESS_LOCKS + 1  # each address, and "all addresses" shared


async def test_a_large_batch_and_a_per_address_writer_exclude_each_other(db: Database) -> None:
    many = [f"user{i}@example.net" for i in range(MAX_ADDRESS_LOCKS + 1)]
    order: list[str] = []

    async def one(address: str) -> None:
        async with db.write([address]):
            order.append(address)

    # The large batch holds: a writer of one of its addresses waits for its commit.
    async with db.write(many):
        waiting = asyncio.create_task(one(many[0]))
        await until_waiting(db)
        order.append("large")
    await waiting
    assert order == ["large", many[0]]

    # A per-address writer holds: the large batch waits for it, whatever address it holds.
    order.clear()
    outside = "someone-else@example.org"

    async def large() -> None:
        async with db.write(many):
            order.append("large")

    async with db.write([outside]):
        waiting = asyncio.create_task(large())
        await until_waiting(db)
        order.append(outside)
    await waiting
    assert order == [outside, "large"]


async def test_an_ingest_batch_of_more_hard_bounces_than_the_lock_table(pg_env: Env) -> None:
    size = await lock_table_size(pg_env.services.db)
    n = 4 * size
    lines = [HEADER] + [
        f'b,1767607200,user{i}@example.net,5.1.1,"smtp;550 5.1.1 <user{i}@example.net>: '
        f'Recipient address rejected: User unknown",mx.example.net'
        for i in range(n)
    ]
    batch = Batch()
    batch.add(parse_pmta(lines, "acct.csv"))
    assert len(batch.events) == n and not batch.errors
    result = await EventStore(pg_env.services).record(batch, count_deliveries=True)
    assert result.new == n
    assert result.suppressed == n
    async with pg_env.services.db.read() as s:
        suppressed = await s.execute(
            text("SELECT count(*) FROM suppressions WHERE outcome = 'hard' AND removed_at IS NULL")
        )
        assert suppressed.scalar_one() == n
