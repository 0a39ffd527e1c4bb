"""Never weaken an entry: the one statement of how a new suppression meets an existing one, and of
when an entry is active. The Python merge (single writes, intake) and the SQL of the bulk import
are both generated from the table below, so they cannot drift apart.

* an entry is *active* until it is removed or its ``expires_at`` has passed;
* an inactive entry is replaced whole by the new one (a fresh suppression);
* on an active one, the stronger outcome wins (complaint > hard > manual > unsubscribe > soft; an
  equal one takes over too), and permanence never becomes expiry: the later expiry is kept, none
  if either has none.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, Protocol

from sqlalchemy import ColumnElement, and_, or_

STRENGTH: Final[dict[str, int]] = {
    "complaint": 50,
    "hard": 40,
    "manual": 35,
    "unsubscribe": 30,
    "soft": 10,
}


def stronger_or_equal(outcome: str, than: str) -> bool:
    return STRENGTH.get(outcome, 0) >= STRENGTH.get(than, 0)


def strength_sql(column: str) -> str:
    whens = " ".join(f"WHEN '{o}' THEN {n}" for o, n in STRENGTH.items())
    return f"(CASE {column} {whens} ELSE 0 END)"


# ------------------------------------------------------------------------------------ active


def is_active(removed_at: datetime | None, expires_at: datetime | None, now: datetime) -> bool:
    return removed_at is None and (expires_at is None or expires_at > now)


def active_clause(removed_at: Any, expires_at: Any, now: datetime) -> ColumnElement[bool]:
    """``is_active`` as a SQLAlchemy condition on two columns."""
    return and_(removed_at.is_(None), or_(expires_at.is_(None), expires_at > now))


def active_sql(prefix: str, now: str) -> str:
    """``is_active`` as SQL text: ``prefix`` qualifies the columns, ``now`` is a parameter."""
    return f"({prefix}removed_at IS NULL AND ({prefix}expires_at IS NULL OR {prefix}expires_at > {now}))"


# ------------------------------------------------------------------------------------ merge

# Column -> the rule for (an inactive old entry, a new entry that takes over, one that does not).
MERGE: Final[dict[str, tuple[str, str, str]]] = {
    "outcome": ("new", "new", "old"),
    "reason": ("new", "new", "old"),
    "source": ("new", "new", "old"),
    "detail": ("new", "new_if_set", "old"),
    "verified": ("new", "new_or_kept_if_same_outcome", "old"),
    "expires_at": ("new", "longer", "longer"),
    "first_seen": ("new", "old", "old"),
    "hit_count": ("new", "old_plus_one", "old_plus_one"),
}
# What "changed" means (an entry merely seen again is a hit, not a change).
COMPARED: Final = ("outcome", "reason", "expires_at", "verified")

_Rule = Callable[[Any, Any, dict[str, Any], dict[str, Any]], Any]
_PY_RULES: Final[dict[str, _Rule]] = {
    "new": lambda old, new, olds, news: new,
    "old": lambda old, new, olds, news: old,
    "new_if_set": lambda old, new, olds, news: new or old,
    "new_or_kept_if_same_outcome": lambda old, new, olds, news: (
        new or (old and olds["outcome"] == news["outcome"])
    ),
    "longer": lambda old, new, olds, news: None if old is None or new is None else max(old, new),
    "old_plus_one": lambda old, new, olds, news: old + 1,
}
_SQL_RULES: Final[dict[str, str]] = {
    "new": "{new}",
    "old": "{old}",
    "new_if_set": "(CASE WHEN {new} <> {empty} THEN {new} ELSE {old} END)",
    "new_or_kept_if_same_outcome": "({new} OR ({old} AND s.outcome = excluded.outcome))",
    "longer": "(CASE WHEN {old} IS NULL OR {new} IS NULL THEN NULL ELSE {greatest}({old}, {new}) END)",
    "old_plus_one": "{old} + 1",
}


class Incoming(Protocol):
    """What a new suppression brings to a merge (``SuppressRequest`` is one)."""

    outcome: str
    reason: str
    source: str
    detail: dict[str, Any]
    verified: bool
    expires_at: datetime | None


def merge_into(row: Any, req: Incoming, now: datetime) -> bool:
    """Apply ``req`` to an existing row without weakening it. Returns whether it changed."""
    active = is_active(row.removed_at, row.expires_at, now)
    branch = 2
    if not active:
        branch = 0  # removed or expired: a fresh suppression
    elif stronger_or_equal(req.outcome, row.outcome):
        branch = 1
    olds = {column: getattr(row, column) for column in MERGE}
    news = {
        "outcome": req.outcome,
        "reason": req.reason,
        "source": req.source,
        "detail": req.detail,
        "verified": req.verified,
        "expires_at": req.expires_at,
        "first_seen": now,
        "hit_count": 1,
    }
    for column, rules in MERGE.items():
        rule = _PY_RULES[rules[branch]]
        setattr(row, column, rule(olds[column], news[column], olds, news))
    row.removed_at = None
    row.revision += 1
    row.last_seen = row.updated_at = now
    return not active or any(olds[c] != getattr(row, c) for c in COMPARED)


def merge_set_sql(dialect: str, *, now: str, overwrite: bool = False) -> tuple[list[str], str]:
    """``merge_into`` as SQL for ``INSERT INTO suppressions AS s … ON CONFLICT DO UPDATE``: the
    ``SET`` assignments of the merged columns and the condition under which the row changes.
    ``overwrite``: the new entry always takes over, its expiry included (an import option)."""
    pg = dialect == "postgresql"
    active = active_sql("s.", now)
    takes = (
        "TRUE"
        if overwrite
        else f"{strength_sql('excluded.outcome')} >= {strength_sql('s.outcome')}"
    )
    names = {"empty": "'{}'::jsonb" if pg else "'{}'", "greatest": "GREATEST" if pg else "MAX"}
    merged = {}
    for column, rules in MERGE.items():
        if overwrite and column == "expires_at":
            rules = (rules[0], "new", "new")
        fresh, take, keep = (
            _SQL_RULES[r].format(old=f"s.{column}", new=f"excluded.{column}", **names)
            for r in rules
        )
        merged[column] = (
            f"(CASE WHEN NOT {active} THEN {fresh} WHEN {takes} THEN {take} ELSE {keep} END)"
        )
    differs = "IS DISTINCT FROM" if pg else "IS NOT"
    changed = " OR ".join([f"NOT {active}"] + [f"{merged[c]} {differs} s.{c}" for c in COMPARED])
    return [f"{column} = {expr}" for column, expr in merged.items()], changed
