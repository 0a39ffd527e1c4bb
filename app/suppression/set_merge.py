"""A batch of suppressions merged in one statement on PostgreSQL (the intake's write path).

One statement over ``unnest`` of one array per column, whatever the batch: the rows that exist are
locked (``SELECT … FOR UPDATE``, in (address, scope) order) and merged by an ``UPDATE … FROM`` that
subquery, whose ``SET`` is :func:`~app.suppression.merge.merge_set_sql` (the never-weaken rule,
generated from the one table in ``app.suppression.merge``); the locked subquery also returns the
values before the merge. The missing rows are inserted (``ON CONFLICT DO NOTHING``). What changed
is then decided in Python from the values before and after (``is_active``, ``COMPARED``), as
:func:`~app.suppression.merge.merge_into` decides it. A pair that another transaction inserted
after the statement's snapshot is neither merged nor inserted: it is merged by running the
statement again for it. The (address, scope) pairs of one call must be distinct.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.set_insert import json_text
from app.suppression.merge import COMPARED, is_active, merge_set_sql

__all__ = ["Merged", "merge_many"]

Key = tuple[str, str]  # (address, scope)

# The columns of a new entry, as arrays, and the type of each.
_INPUT: Final = (
    ("address", "varchar"),
    ("domain", "varchar"),
    ("scope", "varchar"),
    ("outcome", "varchar"),
    ("reason", "varchar"),
    ("source", "varchar"),
    ("detail", "jsonb"),
    ("verified", "boolean"),
    ("expires_at", "timestamptz"),
)
_ATTEMPTS: Final = 5


@dataclass(slots=True)
class Merged:
    """One (address, scope) after the statement: its state now, and what the write did."""

    address: str
    scope: str
    created: bool
    changed: bool  # as merge_into says: outcome, reason, expiry, verified or activity changed
    was_active: bool  # before the write (False for a created entry)
    outcome: str
    reason: str
    expires_at: datetime | None
    verified: bool


def _statement() -> TextClause:
    now = "CAST(:now AS timestamptz)"
    merged, _ = merge_set_sql("postgresql", now=now)
    arrays = ", ".join(
        f"CAST(CAST(:{n} AS text[]) AS jsonb[])" if t == "jsonb" else f"CAST(:{n} AS {t}[])"
        for n, t in _INPUT
    )
    names = ", ".join(n for n, _ in _INPUT)
    before = ["expires_at", "removed_at", *(c for c in COMPARED if c != "expires_at")]
    old = ", ".join(f"o.{c} AS old_{c}" for c in before)
    after = ", ".join(f"s.{c}" for c in COMPARED)
    old_out = ", ".join(f"excluded.old_{c}" for c in before)
    types = {"expires_at": "timestamptz", "removed_at": "timestamptz", "verified": "boolean"}
    nulls = ", ".join(f"CAST(NULL AS {types.get(c, 'varchar')}) AS old_{c}" for c in before)
    created = ", ".join(COMPARED)
    # Every interpolated piece is generated from constants; the values are bound.
    return text(f"""
WITH new AS (
    SELECT n.*, {now} AS first_seen, 1 AS hit_count
    FROM unnest({arrays}) AS n({names})
),
merged AS (
    UPDATE suppressions AS s SET
        {", ".join(merged)},
        removed_at = NULL, revision = s.revision + 1, last_seen = {now}, updated_at = {now}
    FROM (
        SELECT new.*, o.id AS old_id, {old}
        FROM new JOIN suppressions AS o ON o.address = new.address AND o.scope = new.scope
        ORDER BY o.address, o.scope
        FOR UPDATE OF o
    ) AS excluded
    WHERE s.id = excluded.old_id
    RETURNING s.address, s.scope, FALSE AS created, {after}, {old_out}
),
inserted AS (
    INSERT INTO suppressions (address, domain, scope, outcome, reason, source, detail, verified,
        first_seen, last_seen, expires_at, hit_count, removed_at, revision, updated_at)
    SELECT address, domain, scope, outcome, reason, source, detail, verified,
        first_seen, first_seen, expires_at, 1, NULL, 1, first_seen
    FROM new
    WHERE NOT EXISTS (
        SELECT 1 FROM merged AS m WHERE m.address = new.address AND m.scope = new.scope
    )
    ORDER BY address, scope
    ON CONFLICT (address, scope) DO NOTHING
    RETURNING address, scope, TRUE AS created, {created}, {nulls}
)
SELECT * FROM merged UNION ALL SELECT * FROM inserted""")  # noqa: S608


_MERGE_MANY: Final = _statement()


def _params(rows: Sequence[dict[str, Any]], now: datetime) -> dict[str, Any]:
    params: dict[str, Any] = {"now": now}
    for name, kind in _INPUT:
        values = [row[name] for row in rows]
        params[name] = [json_text(v) for v in values] if kind == "jsonb" else values
    return params


def _result(rec: Any, now: datetime) -> Merged:
    if rec.created:
        was_active, changed = False, True
    else:
        was_active = is_active(rec.old_removed_at, rec.old_expires_at, now)
        changed = not was_active or any(
            getattr(rec, f"old_{c}") != getattr(rec, c) for c in COMPARED
        )
    return Merged(
        rec.address,
        rec.scope,
        bool(rec.created),
        changed,
        was_active,
        rec.outcome,
        rec.reason,
        rec.expires_at,
        bool(rec.verified),
    )


async def merge_many(
    s: AsyncSession, rows: Sequence[dict[str, Any]], now: datetime
) -> dict[Key, Merged]:
    """Merge ``rows`` (``model.new_row`` dicts, distinct (address, scope) pairs) into the list in
    the caller's transaction; the state and outcome of each pair."""
    done: dict[Key, Merged] = {}
    todo = sorted(rows, key=lambda r: (r["address"], r["scope"]))
    for _ in range(_ATTEMPTS):
        for rec in await s.execute(_MERGE_MANY, _params(todo, now)):
            done[(rec.address, rec.scope)] = _result(rec, now)
        todo = [r for r in todo if (r["address"], r["scope"]) not in done]
        if not todo:
            return done
    raise RuntimeError(f"{len(todo)} suppressions neither merged nor inserted")


_EXPIRED_UNRECORDED: Final = text(
    "SELECT EXISTS (SELECT 1 FROM suppressions s JOIN unnest(CAST(:addresses AS varchar[]), "
    "CAST(:scopes AS varchar[])) AS k(address, scope) ON s.address = k.address "
    "AND s.scope = k.scope WHERE s.removed_at IS NULL AND s.expires_at <= :now)"
)


async def any_expired_unrecorded(s: AsyncSession, keys: Sequence[Key], now: datetime) -> bool:
    """Whether any of these (address, scope) pairs is past its expiry with its end not yet
    recorded: such a write revives the entry and must say ``suppression.removed`` first, which
    the one-statement merge does not (the caller then takes the row-by-row path)."""
    found = await s.execute(
        _EXPIRED_UNRECORDED,
        {"addresses": [k[0] for k in keys], "scopes": [k[1] for k in keys], "now": now},
    )
    return bool(found.scalar())
