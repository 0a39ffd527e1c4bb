"""Run stored messages through parsing and policy again (e.g. after a rule change) and report
what changes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.feedback import (
    safe_stream,
)
from app.intake.parse_pool import ParsingPool
from app.intake.processor import Applier, state_for, summarise
from app.intake.store import FAILED, IntakeStore, StoredMessage

log = logging.getLogger("app.intake")


@dataclass(slots=True)
class ReprocessChange:
    id: int
    old_state: str
    new_state: str
    old_kind: str | None
    new_kind: str | None
    changes: list[dict[str, Any]]
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "old_state": self.old_state,
            "new_state": self.new_state,
            "old_kind": self.old_kind,
            "new_kind": self.new_kind,
            "changes": self.changes,
            "error": self.error,
        }


def _by_recipient(summary: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in (summary or {}).get("results", []):
        out[str(r.get("recipient"))] = r
    return out


def diff_summaries(old: dict[str, Any] | None, new: dict[str, Any]) -> list[dict[str, Any]]:
    """Per recipient: what the earlier run decided and what this run decides, where they differ."""
    before, after = _by_recipient(old), _by_recipient(new)
    changes = []
    for rcpt in sorted(before.keys() | after.keys()):
        b, a = before.get(rcpt), after.get(rcpt)
        key = ("outcome", "reason", "rule_id")
        if b is None or a is None or any(b.get(k) != a.get(k) for k in key):
            changes.append(
                {
                    "recipient": rcpt,
                    "before": None if b is None else {k: b.get(k) for k in key},
                    "after": None if a is None else {k: a.get(k) for k in key},
                }
            )
    return changes


@dataclass(slots=True)
class ReprocessReport:
    examined: int
    dry_run: bool
    changes: list[ReprocessChange]

    def as_dict(self) -> dict[str, Any]:
        return {
            "examined": self.examined,
            "changed": len(self.changes),
            "dry_run": self.dry_run,
            "changes": [c.as_dict() for c in self.changes],
        }


async def reprocess(
    store: IntakeStore,
    pool: ParsingPool,
    applier: Applier,
    *,
    failed_only: bool = False,
    since: datetime | None = None,
    dry_run: bool = False,
    limit: int | None = None,
    ids: list[int] | None = None,
) -> ReprocessReport:
    """Run stored messages through the pipeline again (after a parser or rule change).

    Reports the messages whose state, kind or per-recipient decision changes. With ``dry_run``
    nothing is written: the policy is asked what it would do. Messages still pending are left to
    the processor; messages whose raw bytes were purged cannot be reprocessed."""
    rows = await store.select_for_reprocess(
        failed_only=failed_only, since=since, limit=limit, ids=ids
    )
    changes: list[ReprocessChange] = []
    for row in rows:
        assert row.raw is not None
        msg = StoredMessage(row.id, bytes(row.raw), row.mail_from, list(row.rcpt_to), row.peer)
        parsed = await pool.parse(msg.raw, msg.rcpt_to[0] if msg.rcpt_to else None)
        if parsed.analysis is None:
            new_state, new_kind, summary, error = FAILED, None, None, parsed.error
            result = None
        else:
            result = await applier(msg, parsed.analysis, dry_run)
            new_state = state_for(parsed.analysis, result)
            new_kind, error = parsed.analysis.kind, None
            summary = summarise(parsed.analysis, result)
        diff = diff_summaries(row.summary, summary) if summary is not None else []
        if new_state != row.state or new_kind != row.kind or diff or error != row.error:
            changes.append(
                ReprocessChange(row.id, row.state, new_state, row.kind, new_kind, diff, error)
            )
        if not dry_run:
            await store.finish(
                row.id,
                state=new_state,
                kind=new_kind,
                error=error,
                summary=summary,
                verified=bool(result and result.verified),
                stream=safe_stream(parsed.analysis.stream) if parsed.analysis else None,
                only_if_claimed=False,
            )
    return ReprocessReport(examined=len(rows), dry_run=dry_run, changes=changes)
