"""The never-weaken rule is one table (``app.suppression.merge``): the Python merge and the SQL the
bulk import runs are generated from it. Every combination of an existing entry and a new one must
come out the same both ways."""

from __future__ import annotations

import itertools
import json
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from app.suppression.merge import STRENGTH, merge_into, merge_set_sql

NOW = datetime(2026, 1, 1, tzinfo=UTC)
WHEN = {
    "none": None,
    "past": NOW - timedelta(days=1),
    "soon": NOW + timedelta(days=1),
    "later": NOW + timedelta(days=9),
}


@dataclass
class New:
    outcome: str
    reason: str = "new_reason"
    source: str = "import"
    detail: dict[str, Any] = field(default_factory=dict)
    verified: bool = False
    expires_at: datetime | None = None


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _sql_merge(old: SimpleNamespace, new: New, *, overwrite: bool) -> tuple[dict[str, Any], bool]:
    db = sqlite3.connect(":memory:")
    db.execute(
        "CREATE TABLE suppressions (address TEXT, scope TEXT, outcome TEXT, reason TEXT, "
        "source TEXT, detail TEXT, verified BOOLEAN, first_seen TEXT, expires_at TEXT, "
        "hit_count INT, removed_at TEXT, revision INT, last_seen TEXT, updated_at TEXT, "
        "UNIQUE (address, scope))"
    )
    columns = ("outcome", "reason", "source", "detail", "verified", "first_seen", "expires_at")
    values = [getattr(old, c) for c in columns]
    values[3] = json.dumps(values[3])
    db.execute(
        "INSERT INTO suppressions VALUES ('a', 'global', ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, NULL, NULL)",
        [
            *[_iso(v) if isinstance(v, datetime) else v for v in values],
            old.hit_count,
            _iso(old.removed_at),
        ],
    )
    merged, changed = merge_set_sql("sqlite", now=":now", overwrite=overwrite)
    cursor = db.execute(
        "INSERT INTO suppressions AS s (address, scope, outcome, reason, source, detail, verified, "
        "first_seen, expires_at, hit_count, removed_at, revision, last_seen, updated_at) "
        "VALUES ('a', 'global', :outcome, :reason, :source, :detail, :verified, :now, :expires, "
        "1, NULL, 1, :now, :now) ON CONFLICT (address, scope) DO UPDATE SET "
        + ", ".join(merged)
        + ", removed_at = NULL WHERE "
        + changed,
        {
            "outcome": new.outcome,
            "reason": new.reason,
            "source": new.source,
            "detail": json.dumps(new.detail),
            "verified": new.verified,
            "expires": _iso(new.expires_at),
            "now": _iso(NOW),
        },
    )
    row = db.execute(
        "SELECT outcome, reason, source, verified, expires_at, hit_count, first_seen, detail "
        "FROM suppressions"
    ).fetchone()
    keys = ("outcome", "reason", "source", "verified", "expires_at", "hit_count", "first_seen")
    result = dict(zip(keys, row, strict=False))
    result["verified"] = bool(result["verified"])
    result["detail"] = json.loads(row[7])
    return result, cursor.rowcount == 1


@pytest.mark.parametrize(
    ("old_outcome", "new_outcome"), list(itertools.product(STRENGTH, STRENGTH))
)
def test_python_and_sql_merge_agree(old_outcome: str, new_outcome: str) -> None:
    for old_expiry, new_expiry, removed, verified, detail in itertools.product(
        WHEN, ("none", "soon", "later"), (False, True), (False, True), ({}, {"note": "n"})
    ):
        old = SimpleNamespace(
            outcome=old_outcome,
            reason="old_reason",
            source="api",
            detail={"note": "old"},
            verified=verified,
            first_seen=NOW - timedelta(days=30),
            expires_at=WHEN[old_expiry],
            hit_count=3,
            removed_at=NOW - timedelta(hours=1) if removed else None,
            revision=1,
            last_seen=None,
            updated_at=None,
        )
        new = New(new_outcome, detail=detail, expires_at=WHEN[new_expiry])
        sql, sql_changed = _sql_merge(SimpleNamespace(**vars(old)), new, overwrite=False)
        py_changed = merge_into(old, new, NOW)
        python = {
            "outcome": old.outcome,
            "reason": old.reason,
            "source": old.source,
            "verified": bool(old.verified),
            "expires_at": _iso(old.expires_at),
            "first_seen": _iso(old.first_seen),
            "detail": old.detail,
        }
        case = (old_expiry, new_expiry, removed, verified, detail)
        if sql_changed:  # the SQL leaves an unchanged row untouched (no hit counted)
            assert python == {k: sql[k] for k in python}, case
            assert old.hit_count == sql["hit_count"], case
        assert py_changed == sql_changed, case
