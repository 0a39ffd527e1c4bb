"""Applying plans: the events and suppressions a :class:`~app.feedback.planner.Plan` asks for.

:func:`apply_plans` writes a batch of plans in one transaction; a dry run (:func:`apply_analysis`
with ``dry_run``) reads the same things and takes the same decisions (:func:`_decide`,
:func:`_soft_crossings`) without writing. Applying the same message twice (a retried intake,
``stoplist reprocess``) writes nothing new: a step whose event (address, message id, kind,
outcome) already exists is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app import metrics
from app.container import Services
from app.db import DB_ERRORS, Database
from app.feedback.planner import Envelope, Plan, Step, plan_message
from app.models import Event, utcnow
from app.rates import Occurrence, mail_occurrence, record_occurrences
from app.settings import Settings
from app.streams import GLOBAL_SCOPE
from app.suppression import SuppressRequest, SuppressResult
from app.suppression.repository import among, insert_events
from app.suppression.set_merge import Merged
from app.webhooks import outbox as webhooks_outbox
from dsn.model import MessageAnalysis

__all__ = [
    "ApplyResult",
    "BatchItem",
    "WrittenPlans",
    "after_commit",
    "apply_analysis",
    "apply_batch",
    "apply_plans",
    "plan_keys",
    "write_plans",
]

log = logging.getLogger("app.feedback")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ApplyResult:
    applied: int  # suppressions written (or that would be, in a dry run)
    recorded: int  # events written without a suppression
    ignored: int  # results with nothing to do, or already applied
    verified: bool  # a signed reference named the recipient
    notes: list[str]
    steps: list[dict[str, Any]] = field(default_factory=list)  # what was (or would be) done


async def apply_analysis(
    services: Services,
    *,
    message_id: int | None,
    analysis: MessageAnalysis,
    envelope: Envelope,
    dry_run: bool = False,
) -> ApplyResult:
    """Apply one parsed message; in a dry run, say what would be done and write nothing."""
    plan = plan_message(analysis, envelope, services.settings, services.signer)
    if dry_run:
        [result] = await preview_plans(services, [(message_id, plan)])
    else:
        [result] = await apply_plans(services, [(message_id, plan)])
    return result


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One parsed message of a batch (see :func:`apply_batch`)."""

    message_id: int | None
    analysis: MessageAnalysis
    envelope: Envelope


async def apply_batch(
    services: Services, items: Sequence[BatchItem], *, db: Database | None = None
) -> list[ApplyResult]:
    """Apply several parsed messages in one transaction; one result per item, in order.

    The same policy as :func:`apply_analysis`, with the writes of the whole batch grouped (see
    :func:`apply_plans`). ``db`` is the engine to write with (the intake has its own); it must be
    the service's database. An exception means nothing of the batch was written."""
    settings, signer = services.settings, services.signer
    plans = [(i.message_id, plan_message(i.analysis, i.envelope, settings, signer)) for i in items]
    return await apply_plans(services, plans, db=db)


# --------------------------------------------------------------------------------- decisions


@dataclass(slots=True)
class _Tally:
    """What one plan's application did (or would do): becomes its :class:`ApplyResult`."""

    applied: int
    recorded: int
    ignored: int
    notes: list[str]
    done: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class _Decision:
    """The steps of a batch sorted by what they need, after skipping the ones already applied."""

    tallies: list[_Tally]
    suppress: list[tuple[int | None, Step]] = field(default_factory=list)
    events: list[tuple[int | None, Step]] = field(default_factory=list)  # record + soft bounce
    soft: dict[str, list[tuple[int, int | None, Step]]] = field(default_factory=dict)
    # Addresses of steps a message had already applied: the process that applied them may have
    # died between that commit and its cache write, so they are written through again.
    reapplied: set[str] = field(default_factory=set)

    def results(self, plans: Sequence[tuple[int | None, Plan]]) -> list[ApplyResult]:
        return [
            ApplyResult(t.applied, t.recorded, t.ignored, plan.verified, t.notes, t.done)
            for t, (_, plan) in zip(self.tallies, plans, strict=True)
        ]


def _decide(
    plans: Sequence[tuple[int | None, Plan]], seen: set[tuple[str, int | None, str, str | None]]
) -> _Decision:
    """Sort the steps of ``plans``; ``seen`` holds the event keys already written (and grows)."""
    d = _Decision([_Tally(0, 0, plan.ignored, list(plan.notes)) for _, plan in plans])
    for i, (mid, plan) in enumerate(plans):
        tally = d.tallies[i]
        for step in plan.steps:
            key = (step.address, mid, _event_kind(step), step.outcome)
            if mid is not None:
                if key in seen:
                    tally.ignored += 1
                    d.reapplied.add(step.address)
                    tally.notes.append(
                        f"{step.address}: {step.kind} already applied for this message"
                    )
                    continue
                seen.add(key)
            tally.done.append(step.to_json())
            if step.action == "suppress":
                d.suppress.append((mid, step))
                tally.applied += 1
                continue
            d.events.append((mid, step))
            if step.action == "record":
                tally.recorded += 1
            else:
                d.soft.setdefault(step.address, []).append((i, mid, step))
    return d


def _soft_crossings(
    d: _Decision, counts: dict[str, int], settings: Settings
) -> list[tuple[int | None, Step, int]]:
    """The soft bounces that reach the threshold: (message id, step, count) each.

    ``counts`` are the soft bounces in the window per address before this batch's. The n-th
    soft bounce of an address in the batch sees the count it would have seen alone, so the
    threshold is crossed where it would have been one message at a time."""
    crossed: list[tuple[int | None, Step, int]] = []
    for address, found in d.soft.items():
        before = counts.get(address, 0)
        for nth, (i, mid, step) in enumerate(found, start=1):
            count = before + nth
            if count < settings.soft_bounce_threshold:
                d.tallies[i].recorded += 1
                continue
            d.tallies[i].applied += 1
            d.tallies[i].notes.append(f"{address}: soft bounce threshold reached")
            crossed.append((mid, step, count))
    return crossed


def plan_keys(plans: Sequence[tuple[int | None, Plan]]) -> tuple[list[str], list[int]]:
    """(addresses, message ids) the steps of ``plans`` touch, sorted."""
    steps = [(mid, step) for mid, plan in plans for step in plan.steps]
    addresses = sorted({step.address for _, step in steps})
    return addresses, sorted({mid for mid, _ in steps if mid is not None})


# --------------------------------------------------------------------------------- execution


async def apply_plans(
    services: Services,
    plans: Sequence[tuple[int | None, Plan]],
    *,
    db: Database | None = None,
) -> list[ApplyResult]:
    """Carry out (message id, plan) pairs in one transaction, then refresh the cache once.

    The transaction holds the write locks of every address the batch touches (taken in one
    statement, in key order) and runs :func:`write_plans`; after the commit, :func:`after_commit`
    refreshes the cache.
    """
    db = db or services.db
    addresses, _ = plan_keys(plans)
    if not addresses:
        return _decide(plans, set()).results(plans)
    async with db.write(addresses) as s:
        written = await write_plans(s, services, plans)
        # Bounce mail is counted here, on the mail path only: delivery events reach write_plans
        # too, and the event store counts them itself (app.events.store).
        await record_occurrences(
            await s.connection(), _rate_occurrences(written.decision, utcnow())
        )
    await after_commit(services, written, db)
    return written.results(plans)


@dataclass(slots=True)
class WrittenPlans:
    """What :func:`write_plans` did inside a transaction; :func:`after_commit` finishes it."""

    decision: _Decision
    requests: list[SuppressRequest]
    written: Sequence[SuppressResult | Merged]

    def results(self, plans: Sequence[tuple[int | None, Plan]]) -> list[ApplyResult]:
        return self.decision.results(plans)


async def write_plans(
    s: AsyncSession, services: Services, plans: Sequence[tuple[int | None, Plan]]
) -> WrittenPlans:
    """The writes of ``plans`` inside the caller's transaction ``s``, which must hold the write
    locks of every address in :func:`plan_keys` (``Database.write(addresses)``).

    One read of the events these messages already wrote (a step whose event exists is skipped, so
    applying a message twice writes nothing new), one count of the soft bounces in the window per
    address before this batch's (see :func:`_soft_crossings`; the address locks keep it true
    until the commit), one insert of the recorded and soft-bounce events with their outbound
    events, then the suppressions with theirs (``SuppressionService.write_suppressions_fast``).
    Nothing is committed here.
    """
    settings = services.settings
    addresses, message_ids = plan_keys(plans)
    now = utcnow()
    d = _decide(plans, await _applied_keys(s, addresses, message_ids))
    requests = [_request(step, mid) for mid, step in d.suppress]
    written: Sequence[SuppressResult | Merged] = []
    counts: dict[str, int] = {}
    if d.soft:
        since = now - timedelta(hours=settings.soft_bounce_window_h)
        counts = await _soft_counts(s, sorted(d.soft), since)
    if d.events:
        rows = [_event_row(st, m, now) for m, st in d.events]
        outbox = [out for r in rows for out in webhooks_outbox.for_history(r, None)]
        await insert_events(s, rows, [], outbox)
    if d.soft:
        for mid, step, count in _soft_crossings(d, counts, settings):
            requests.append(_soft_request(settings, step, mid, count, now))
    if requests:
        written = await services.suppressions.write_suppressions_fast(s, requests, now)
    return WrittenPlans(d, requests, written)


async def after_commit(services: Services, done: WrittenPlans, db: Database) -> None:
    """Once the transaction of :func:`write_plans` committed: count the suppressions written and
    refresh the cache replica from a fresh read of every suppressed address (see ``app.cache``)."""
    if done.written:
        for req in done.requests:
            metrics.SUPPRESSIONS_WRITTEN.labels(req.outcome, req.source).inc()
    addresses = {r.address for r in done.written} | done.decision.reapplied
    await _refresh(services, sorted(addresses), db)


async def _refresh(services: Services, addresses: list[str], db: Database) -> None:
    if not addresses:
        return
    try:
        await services.suppressions.refresh_cache(addresses, db=db)
    except DB_ERRORS as exc:
        # Committed, but the fresh read failed: the replica lacks them until they are repaired.
        services.suppressions.note_unwritten(addresses, exc)


async def preview_plans(
    services: Services, plans: Sequence[tuple[int | None, Plan]]
) -> list[ApplyResult]:
    """What :func:`apply_plans` would do with ``plans`` (a dry run): the same reads and
    decisions, nothing written."""
    addresses, message_ids = plan_keys(plans)
    if not addresses:
        return _decide(plans, set()).results(plans)
    async with services.db.read() as s:
        d = _decide(plans, await _applied_keys(s, addresses, message_ids))
        if d.soft:
            since = utcnow() - timedelta(hours=services.settings.soft_bounce_window_h)
            _soft_crossings(d, await _soft_counts(s, sorted(d.soft), since), services.settings)
    return d.results(plans)


def _soft_request(
    settings: Settings, step: Step, message_id: int | None, count: int, now: datetime
) -> SuppressRequest:
    return SuppressRequest(
        address=step.address,
        outcome="soft",
        reason=step.reason or "unclassified",
        source="bounce",
        expires_at=now + timedelta(days=settings.soft_suppression_days),
        verified=step.verified,
        event_kind="soft_threshold",
        rule_id=step.rule_id,
        status=_storable(step.status),
        reply_code=step.reply_code,
        diagnostic=_storable(step.diagnostic),
        message_id=message_id,
        detail={
            "soft_bounces": count,
            "window_h": settings.soft_bounce_window_h,
            "days": settings.soft_suppression_days,
        },
    )


def _rate_occurrences(d: _Decision, now: datetime) -> list[Occurrence | None]:
    """What the steps carried out add to the deliverability rates (app.rates)."""
    return [
        mail_occurrence(
            kind=step.kind,
            outcome=step.outcome,
            address=step.address,
            stream=step.stream or step.detail.get("stream"),
            remote_mta=step.detail.get("remote_mta"),
            now=now,
        )
        for _, step in (*d.suppress, *d.events)
    ]


def _event_kind(step: Step) -> str:
    return "bounce" if step.action == "soft_bounce" else step.kind


async def _applied_keys(
    s: AsyncSession, addresses: Sequence[str], message_ids: Sequence[int]
) -> set[tuple[str, int | None, str, str | None]]:
    """(address, message id, kind, outcome) of the events these messages already wrote."""
    if not message_ids:
        return set()
    q = select(Event.address, Event.message_id, Event.kind, Event.outcome).where(
        among(s, Event.address, addresses), among(s, Event.message_id, message_ids)
    )
    return {(a, m, k, o) for a, m, k, o in (await s.execute(q)).all()}


async def _soft_counts(
    s: AsyncSession, addresses: Sequence[str], since: datetime
) -> dict[str, int]:
    """Soft bounces per address since ``since`` (read before this batch's are written)."""
    q = (
        select(Event.address, func.count(Event.id))
        .where(
            among(s, Event.address, addresses),
            Event.kind == "bounce",
            Event.outcome == "soft",
            Event.created_at >= since,
        )
        .group_by(Event.address)
    )
    return {str(a): int(n) for a, n in (await s.execute(q)).all()}


def _request(step: Step, message_id: int | None) -> SuppressRequest:
    assert step.outcome is not None and step.reason is not None
    return SuppressRequest(
        address=step.address,
        outcome=step.outcome,
        reason=step.reason,
        source=step.source,
        stream=step.stream,
        detail=_storable(step.detail),
        verified=step.verified,
        event_kind=step.kind,
        rule_id=step.rule_id,
        status=_storable(step.status),
        reply_code=step.reply_code,
        diagnostic=_storable(step.diagnostic),
        message_id=message_id,
    )


def _event_row(step: Step, message_id: int | None, now: datetime) -> dict[str, Any]:
    return {
        "created_at": now,
        "address": step.address,
        "scope": step.stream or GLOBAL_SCOPE,
        "kind": step.kind,
        "outcome": step.outcome,
        "reason": step.reason,
        "rule_id": step.rule_id,
        "status": _storable(step.status),
        "reply_code": step.reply_code,
        "diagnostic": _storable(step.diagnostic),
        "source": step.source,
        "actor": None,
        "verified": step.verified,
        "message_id": message_id,
        "detail": _storable(step.detail),
    }


def _storable(value: _T) -> _T:
    """Report text as every store takes it. PostgreSQL refuses NUL in ``text`` and in JSON
    strings, and an encoder refuses unpaired surrogates; one such Diagnostic-Code or Message-ID
    would fail the transaction of the whole batch it is applied in, every time it is retried.
    NUL becomes U+FFFD, a surrogate ``?``; dicts and lists are cleaned throughout."""
    if isinstance(value, str):
        text = value.replace("\x00", "\ufffd") if "\x00" in value else value
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                text = text.encode("utf-8", "replace").decode("utf-8")
        return text  # type: ignore[return-value]
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]  # type: ignore[return-value]
    return value
