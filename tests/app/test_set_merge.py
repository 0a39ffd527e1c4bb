"""The intake's set-based merge (``app.suppression.set_merge``, one SQL statement on PostgreSQL) and
the Python merge (``merge_into``) must agree on every combination of an existing entry and a new
one: the row that results, and what the write reports (created, changed, active before)."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import select, text

from app.db import Database
from app.settings import Settings
from app.suppression.merge import STRENGTH, is_active, merge_into
from app.suppression.model import SuppressRequest, new_row
from app.suppression.repository import SUPPRESSIONS_TABLE
from app.suppression.set_merge import merge_many

NOW = datetime(2026, 1, 1, tzinfo=UTC)
BEFORE = NOW - timedelta(days=30)
WHEN = {
    "none": None,
    "past": NOW - timedelta(days=1),
    "soon": NOW + timedelta(days=1),
    "later": NOW + timedelta(days=9),
}
COLUMNS = (
    "outcome",
    "reason",
    "source",
    "detail",
    "verified",
    "first_seen",
    "last_seen",
    "expires_at",
    "hit_count",
    "removed_at",
    "revision",
    "updated_at",
)


def _cases() -> list[tuple[dict[str, Any], SuppressRequest]]:
    """(existing row, new request) for every combination, each on an address of its own."""
    cases = []
    combos = itertools.product(
        STRENGTH,
        STRENGTH,
        WHEN,
        ("none", "soon", "later"),
        (False, True),
        (False, True),
        ("old_reason", "new_reason"),
    )
    for i, (old_o, new_o, old_exp, new_exp, removed, verified, reason) in enumerate(combos):
        address = f"case{i}@example.com"
        old = {
            "address": address,
            "domain": "example.com",
            "scope": "global",
            "outcome": old_o,
            "reason": "old_reason",
            "source": "api",
            "detail": {"note": "old"},
            "verified": verified,
            "first_seen": BEFORE,
            "last_seen": BEFORE,
            "expires_at": WHEN[old_exp],
            "hit_count": 3,
            "removed_at": NOW - timedelta(hours=1) if removed else None,
            "revision": 2,
            "updated_at": BEFORE,
        }
        new = SuppressRequest(
            address=address,
            outcome=new_o,
            reason=reason,
            source="bounce",
            detail={"note": "n"} if i % 4 < 2 else {},
            verified=i % 3 == 0,
            expires_at=WHEN[new_exp],
        )
        cases.append((old, new))
    return cases


async def test_set_merge_agrees_with_merge_into_on_every_combination(pg_url: str) -> None:
    db = Database(Settings(database_url=pg_url))
    cases = _cases()
    fresh = [
        SuppressRequest(address=f"fresh{o}@example.com", outcome=o, reason="r", source="bounce")
        for o in STRENGTH
    ]
    try:
        async with db.write() as s:
            await s.execute(text("TRUNCATE suppressions RESTART IDENTITY"))
            await s.execute(SUPPRESSIONS_TABLE.insert(), [old for old, _ in cases])
        # Merge, check, roll back: the writes of a real transaction, left behind by none.
        async with db.sessions() as s, s.begin():
            rows = [new_row(req, "global", NOW) for _, req in cases]
            rows += [new_row(req, "global", NOW) for req in fresh]
            merged = await merge_many(s, rows, NOW)
            found = (await s.execute(select(SUPPRESSIONS_TABLE))).all()
            stored = {r.address: r for r in found}
            await s.rollback()
    finally:
        await db.dispose()
    assert len(merged) == len(cases) + len(fresh)
    for old, req in cases:
        python = SimpleNamespace(**old)
        changed = merge_into(python, req, NOW)
        row = stored[req.address]
        case = (old["outcome"], old["expires_at"], old["removed_at"], old["verified"], req)
        assert {c: getattr(row, c) for c in COLUMNS} == {c: getattr(python, c) for c in COLUMNS}, (
            case
        )
        result = merged[(req.address, "global")]
        assert not result.created, case
        assert result.changed == changed, case
        assert result.was_active == is_active(old["removed_at"], old["expires_at"], NOW), case
        assert (result.outcome, result.reason, result.expires_at, result.verified) == (
            row.outcome,
            row.reason,
            row.expires_at,
            row.verified,
        ), case
    for req in fresh:
        row = stored[req.address]
        want = new_row(req, "global", NOW)
        assert {c: getattr(row, c) for c in want} == want
        assert row.removed_at is None
        result = merged[(req.address, "global")]
        assert (result.created, result.changed, result.was_active) == (True, True, False)


async def test_a_pair_another_transaction_inserts_meanwhile_is_merged(pg_url: str) -> None:
    """The statement's snapshot misses a row another transaction inserts while it runs: its
    insert finds the conflict and does nothing, and the pair is merged by the statement run again
    (a complaint over the other's soft entry), never lost and never reported as created."""
    db = Database(Settings(database_url=pg_url))
    soft = SuppressRequest(
        address="late@example.com",
        outcome="soft",
        reason="mailbox_full",
        source="bounce",
        expires_at=NOW + timedelta(days=1),
    )
    complaint = SuppressRequest(
        address="late@example.com", outcome="complaint", reason="abuse", source="complaint"
    )

    async def merge() -> Any:
        async with db.sessions() as s, s.begin():
            return await merge_many(s, [new_row(complaint, "global", NOW)], NOW)

    try:
        async with db.write() as s:
            await s.execute(text("TRUNCATE suppressions RESTART IDENTITY"))
        async with db.sessions() as other, other.begin():
            await other.execute(SUPPRESSIONS_TABLE.insert(), [new_row(soft, "global", NOW)])
            task = asyncio.create_task(merge())
            await _until_a_session_waits_on_a_lock(db)
        merged = await asyncio.wait_for(task, 30)
        async with db.read() as s:
            [row] = (await s.execute(select(SUPPRESSIONS_TABLE))).all()
    finally:
        await db.dispose()
    result = merged[("late@example.com", "global")]
    assert (result.created, result.changed, result.was_active) == (False, True, True)
    assert (row.outcome, row.reason, row.expires_at, row.hit_count, row.revision) == (
        "complaint",
        "abuse",
        None,
        2,
        2,
    )


async def _until_a_session_waits_on_a_lock(db: Database) -> None:
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(600):
        async with db.read() as s:
            if await s.scalar(query):
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the merge never waited for the other transaction's insert")
