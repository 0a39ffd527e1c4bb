"""From a parsed message to suppressions and events: the policy every intake path goes through.

Who the message is about
    A bounce comes back to the envelope sender we used; when that is one of our signed return
    paths, or the returned original carries a valid ``X-Stoplist-Ref``, the recipient and stream
    come from the signed reference, not from the report's text (``verified``). A reference that is
    present but does not verify (forged, tampered, expired, unknown key) means the report is
    recorded and never applied, whatever the settings say; with ``require_signed_bounces`` /
    ``require_signed_reports`` an unsigned report is recorded and never applied either. A value
    that is not one of our references at all (malformed) counts as absent. Without signing keys
    no reference can be checked: reports are applied as parsed.

What happens (one row per recipient; duplicate results for one recipient keep the strongest):

    =========================  =============================================================
    bounce, outcome ``hard``   global permanent suppression (event ``bounce``)
    bounce, outcome ``soft``   event ``bounce``; at ``soft_bounce_threshold`` soft bounces
                               within ``soft_bounce_window_h``, a global suppression that
                               expires after ``soft_suppression_days`` (event ``soft_threshold``)
    bounce, outcome ``policy`` event ``policy_block`` (about the sender, never suppresses)
    action ``delayed``         event ``delay``; never counted as a bounce
    complaint (abuse, fraud,   global permanent ``complaint`` suppression
    virus, other)
    complaint ``opt-out``      ``unsubscribe`` in the report's stream; without a stream, in
                               ``unsubscribe_default_stream`` (``marketing`` unless configured:
                               an opt-out must not silently stop password resets)
    complaint ``not-spam``     event ``not_spam``
    complaint ``auth-failure`` event ``auth_failure`` (RFC 6591: about our authentication)
    auto-reply, delivery       nothing
    report, unknown
    =========================  =============================================================

Applying the same message twice (a retried intake, ``stoplist reprocess``) writes nothing new: a
step whose event (address, message id, kind, outcome) already exists is skipped.

Mail to the ``mailto:`` unsubscribe address (``unsubscribe+<signed>@<unsubscribe domain>``) is an
unsubscribe, whatever its content: :func:`apply_analysis` plans it as one (``_plan_mailto``). One-click unsubscribes (RFC 8058) go through
:func:`unsubscribe_with_token`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app import metrics
from app.addresses import try_normalise
from app.container import Services
from app.db import DB_ERRORS, Database
from app.errors import AppError
from app.models import Event, utcnow
from app.signing import RejectReason, Signer, TokenError, VerifiedRef
from app.streams import GLOBAL_SCOPE, STREAM_RE
from app.suppression import REASON_RE, SuppressRequest, SuppressResult
from app.suppression.merge import stronger_or_equal
from app.suppression.repository import EVENTS_TABLE
from arf import normalise_feedback_type, outcome_for
from dsn.model import MessageAnalysis, RecipientResult

__all__ = [
    "ApplyResult",
    "BatchItem",
    "Envelope",
    "Step",
    "TokenRejected",
    "UnsubscribeResult",
    "apply_analysis",
    "apply_batch",
    "preview_unsubscribe_token",
    "safe_stream",
    "unsubscribe_with_token",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Which result wins when a report names one recipient several times.
_RANK = {"hard": 5, "soft": 4, "policy": 3, "unsubscribe": 2, "complaint": 6, "none": 0}
_COMPLAINT_TYPES_RECORDED = {"not-spam": "not_spam", "auth-failure": "auth_failure"}


@dataclass(frozen=True, slots=True)
class Envelope:
    mail_from: str
    rcpt_to: list[str]
    peer: str | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """One thing the policy does: write a suppression, record an event, or count a soft bounce."""

    action: Literal["suppress", "record", "soft_bounce"]
    address: str
    kind: str  # the event kind
    source: str  # bounce | complaint | unsubscribe
    outcome: str | None = None
    reason: str | None = None
    stream: str | None = None  # None = global
    verified: bool = False
    rule_id: str | None = None
    status: str | None = None
    reply_code: int | None = None
    diagnostic: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "address": self.address,
            "kind": self.kind,
            "outcome": self.outcome,
            "reason": self.reason,
            "scope": self.stream or GLOBAL_SCOPE,
            "verified": self.verified,
            "rule_id": self.rule_id,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class ApplyResult:
    applied: int  # suppressions written (or that would be, in a dry run)
    recorded: int  # events written without a suppression
    ignored: int  # results with nothing to do, or already applied
    verified: bool  # a signed reference named the recipient
    notes: list[str]
    steps: list[dict[str, Any]] = field(default_factory=list)  # what was (or would be) done


@dataclass(frozen=True, slots=True)
class UnsubscribeResult:
    address: str
    scope: str
    already: bool  # the address was already unsubscribed in that scope: nothing written
    stream_defaulted: bool


class TokenRejected(AppError):
    """A reference that does not verify: 400 malformed, 410 expired, 404 otherwise."""

    error = "invalid_token"

    def __init__(self, exc: TokenError) -> None:
        super().__init__({"reason": str(exc.reason), "message": _TOKEN_MESSAGES[exc.reason]})
        self.reason = exc.reason
        self.status_code = {RejectReason.MALFORMED: 400, RejectReason.EXPIRED: 410}.get(
            exc.reason, 404
        )


_TOKEN_MESSAGES = {
    RejectReason.MALFORMED: "this is not a valid unsubscribe link; check it was copied whole",
    RejectReason.UNKNOWN_KEY: "this unsubscribe link is not known here",
    RejectReason.FORGED: "this unsubscribe link is not known here",
    RejectReason.TAMPERED: "this unsubscribe link is not known here",
    RejectReason.EXPIRED: "this unsubscribe link has expired; use the link in a recent message",
}


class SigningDisabled(AppError):
    status_code = 404
    error = "not_found"


# ------------------------------------------------------------------------------------ entry


async def apply_analysis(
    services: Services,
    *,
    message_id: int | None,
    analysis: MessageAnalysis,
    envelope: Envelope,
    dry_run: bool = False,
) -> ApplyResult:
    """Apply one parsed message; in a dry run, say what would be done and write nothing."""
    plan = _plan_message(services, analysis, envelope)
    if dry_run:
        return await _preview(services, plan, message_id=message_id)
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
    plans = [(i.message_id, _plan_message(services, i.analysis, i.envelope)) for i in items]
    return await apply_plans(services, plans, db=db)


def _plan_message(services: Services, analysis: MessageAnalysis, envelope: Envelope) -> _Plan:
    signer = services.signer
    if signer is not None:
        unsub = [r for r in envelope.rcpt_to if signer.is_unsubscribe_address(r)]
        if unsub:
            return _plan_mailto(services, unsub[0])
    return _plan(services, analysis, envelope)


def _plan_mailto(services: Services, rcpt: str) -> _Plan:
    signer = services.signer
    if signer is None:
        return _Plan(ignored=1, notes=["unsubscribe address, but no signing keys configured"])
    try:
        ref = _verify_mailto(signer, rcpt)
    except TokenError as exc:
        note = f"mailto unsubscribe refused: {exc.reason} ({exc.detail})"
        if exc.expired_ref is None:
            return _Plan(ignored=1, notes=[note])
        step = _unverified_unsubscribe(exc.expired_ref, "mailto", exc.reason)
        return _Plan(steps=[step], notes=[note])
    stream, defaulted = _unsubscribe_stream(services, ref.stream)
    step = Step(
        "suppress",
        ref.recipient,
        kind="unsubscribe",
        source="unsubscribe",
        outcome="unsubscribe",
        reason="mailto",
        stream=stream,
        verified=True,
        detail={"via": "mailto", "key_id": ref.key_id, "stream_defaulted": defaulted},
    )
    return _Plan(steps=[step], verified=True)


def _verify_mailto(signer: Signer, rcpt: str) -> VerifiedRef:
    try:
        return signer.verify_unsubscribe_address(rcpt)
    except TokenError as first:
        local = rcpt.strip().strip("<>").rpartition("@")[0]
        token = local.partition("+")[2]
        try:
            return signer.verify_unsubscribe_token(token)
        except TokenError as second:
            raise (first if first.reason != RejectReason.MALFORMED else second) from None


async def preview_unsubscribe_token(services: Services, token: str) -> VerifiedRef:
    """What a one-click token would unsubscribe, without doing it (the GET confirmation page)."""
    signer = services.signer
    if signer is None:
        raise SigningDisabled("unsubscribe links are not enabled on this server")
    try:
        return signer.verify_unsubscribe_token(token)
    except TokenError as exc:
        raise TokenRejected(exc) from None


async def unsubscribe_with_token(
    services: Services, token: str, *, via: str = "one_click"
) -> UnsubscribeResult:
    """RFC 8058 one-click: verify, then unsubscribe in the token's stream. Idempotent."""
    ref = await preview_unsubscribe_token(services, token)
    stream, defaulted = _unsubscribe_stream(services, ref.stream)
    scope = stream or GLOBAL_SCOPE
    # A repeated click (or a provider retrying its POST) writes nothing new.
    (entries,) = await services.suppressions.lookup_entries([ref.recipient])
    for e in entries or ():
        if e.scope == scope and e.expires is None and stronger_or_equal(e.outcome, "unsubscribe"):
            return UnsubscribeResult(ref.recipient, scope, True, defaulted)
    await services.suppressions.suppress(
        SuppressRequest(
            address=ref.recipient,
            outcome="unsubscribe",
            reason=via,
            source="unsubscribe",
            stream=stream,
            verified=True,
            event_kind="unsubscribe",
            detail={"via": via, "key_id": ref.key_id, "stream_defaulted": defaulted},
        )
    )
    return UnsubscribeResult(ref.recipient, scope, False, defaulted)


# ------------------------------------------------------------------------------------ planning


@dataclass(slots=True)
class _Plan:
    steps: list[Step] = field(default_factory=list)
    ignored: int = 0
    verified: bool = False
    notes: list[str] = field(default_factory=list)


def _plan(services: Services, analysis: MessageAnalysis, envelope: Envelope) -> _Plan:
    if analysis.kind == "complaint":
        return _plan_complaint(services, analysis)
    if analysis.kind in ("bounce", "delay"):
        return _plan_bounce(services, analysis, envelope)
    return _Plan(ignored=len(analysis.results), notes=[f"{analysis.kind}: nothing to apply"])


def _verify_refs(
    services: Services, candidates: list[tuple[str, str]], notes: list[str]
) -> tuple[VerifiedRef | None, list[str]]:
    """(the verified reference, failures) over (where, value) candidates.

    ``where`` is ``return_path`` (an address) or ``ref`` (an X-Stoplist-Ref token). A value that is
    not one of our references at all (``malformed``: an older unsigned VERP address with the same
    prefix, another system's header) counts as absent, with a note: refusing the report for it
    would stop nothing, since a forger can leave the value out.
    """
    signer = services.signer
    if signer is None:
        return None, []
    found: VerifiedRef | None = None
    failures: list[str] = []
    for where, value in candidates:
        try:
            if where == "return_path":
                if not signer.is_return_path(value):
                    continue
                ref = signer.verify_return_path(value)
            else:
                ref = signer.verify_ref_token(value)
        except TokenError as exc:
            if exc.reason == RejectReason.MALFORMED:
                notes.append(f"{where}: not a signed reference, ignored")
            else:
                failures.append(f"{where}: {exc.reason}")
            continue
        if found is not None and found.recipient != ref.recipient:
            failures.append(f"{where}: names {ref.recipient}, another reference names another")
            continue
        found = found or ref
    return found, failures


def _plan_bounce(services: Services, analysis: MessageAnalysis, envelope: Envelope) -> _Plan:
    settings = services.settings
    candidates = [("return_path", r) for r in envelope.rcpt_to]
    if analysis.ref_token:
        candidates.append(("ref", analysis.ref_token))
    notes: list[str] = []
    ref, failures = _verify_refs(services, candidates, notes)
    by_recipient = _strongest_per_recipient(analysis.results)
    plan = _Plan(verified=ref is not None and not failures, notes=notes)
    header_stream = safe_stream(analysis.stream)

    if failures or (ref is None and settings.require_signed_bounces):
        why = ", ".join(failures) if failures else "unsigned"
        plan.verified = False
        plan.notes.append(f"bounce not applied: {why}")
        for addr, result in by_recipient.items():
            plan.steps.append(
                _record_from_result(
                    "unverified_bounce", addr, result, header_stream, False, why=why
                )
            )
        return plan

    if ref is not None:
        # The signed recipient is the one that bounced, whatever the report's text names.
        chosen = by_recipient.get(ref.recipient) or _strongest(list(by_recipient.values()))
        others = [a for a in by_recipient if a != ref.recipient]
        if others:
            plan.notes.append(
                f"signed recipient {ref.recipient}; report also names {', '.join(others)}"
            )
            plan.ignored += len(others) - (0 if ref.recipient in by_recipient else 1)
        if chosen is None:
            plan.notes.append("signed reference but no recipient result")
            return plan
        _bounce_step(plan, ref.recipient, chosen, ref.stream, verified=True, ref=ref)
        return plan

    for addr, result in by_recipient.items():
        _bounce_step(plan, addr, result, result.stream or header_stream, verified=False, ref=None)
    return plan


def _bounce_step(
    plan: _Plan,
    address: str,
    result: RecipientResult,
    stream: str | None,
    *,
    verified: bool,
    ref: VerifiedRef | None,
) -> None:
    stream = safe_stream(stream)
    extra: dict[str, Any] = {"remote_mta": result.remote_mta, "action": result.action}
    if ref is not None:
        extra["key_id"] = ref.key_id
        if result.recipient != address:
            extra["reported_recipient"] = result.recipient
    if result.action == "delayed":
        plan.steps.append(_record_from_result("delay", address, result, stream, verified, **extra))
    elif result.outcome == "hard":
        plan.steps.append(
            Step(
                "suppress",
                address,
                kind="bounce",
                source="bounce",
                outcome="hard",
                reason=_reason(result.reason),
                stream=None,  # a dead mailbox is dead for every stream
                verified=verified,
                rule_id=result.rule_id,
                status=(result.status or None) and result.status[:16],
                reply_code=result.reply_code,
                diagnostic=result.diagnostic or None,
                detail={**extra, "stream": stream},
            )
        )
    elif result.outcome == "soft":
        step = _record_from_result("bounce", address, result, stream, verified, **extra)
        plan.steps.append(_replace_action(step, "soft_bounce"))
    elif result.outcome == "policy":
        plan.steps.append(
            _record_from_result("policy_block", address, result, stream, verified, **extra)
        )
    else:
        plan.ignored += 1


def _plan_complaint(services: Services, analysis: MessageAnalysis) -> _Plan:
    settings = services.settings
    ft = normalise_feedback_type(analysis.feedback_type)
    candidates: list[tuple[str, str]] = []
    if analysis.ref_token:
        candidates.append(("ref", analysis.ref_token))
    if analysis.original_sender:
        # The returned message's envelope sender: our signed return path, when we used one.
        candidates.append(("return_path", analysis.original_sender))
    notes: list[str] = []
    ref, failures = _verify_refs(services, candidates, notes)
    usable = [r for r in analysis.results if try_normalise(r.recipient)]
    named = (
        replace(usable[0], recipient=try_normalise(usable[0].recipient) or "") if usable else None
    )
    plan = _Plan(verified=ref is not None and not failures, notes=notes)
    base_detail: dict[str, Any] = {
        "feedback_type": ft,
        "source_ip": analysis.source_ip,
        "reporter": analysis.mta,
        "original_message_id": analysis.original_message_id,
    }

    if failures or (ref is None and settings.require_signed_reports):
        why = ", ".join(failures) if failures else "unsigned"
        plan.verified = False
        plan.notes.append(f"complaint not applied: {why}")
        if named is not None:
            plan.steps.append(
                Step(
                    "record",
                    named.recipient,
                    kind="unverified_complaint",
                    source="complaint",
                    outcome=named.outcome,
                    reason=_reason(named.reason),
                    stream=safe_stream(analysis.stream),
                    rule_id=named.rule_id,
                    detail={**base_detail, "why": why},
                )
            )
        else:
            plan.ignored += 1
        return plan

    if ref is not None:
        address, stream, verified = ref.recipient, ref.stream, True
        base_detail["key_id"] = ref.key_id
    elif named is not None:
        address, stream, verified = named.recipient, safe_stream(analysis.stream), False
    else:
        plan.ignored += 1
        plan.notes.append("complaint names no recipient (redacted) and carries no reference")
        return plan
    if len(usable) > 1 and ref is None:
        plan.ignored += len(usable) - 1
        plan.notes.append("complaint names several recipients: the first one is used")

    rule_id = named.rule_id if named is not None else f"arf-{ft}"
    outcome, reason = outcome_for(ft)
    if ft in _COMPLAINT_TYPES_RECORDED:
        plan.steps.append(
            Step(
                "record",
                address,
                kind=_COMPLAINT_TYPES_RECORDED[ft],
                source="complaint",
                outcome=None,
                reason=_reason(reason),
                stream=stream,
                verified=verified,
                rule_id=rule_id,
                detail=base_detail,
            )
        )
    elif outcome == "unsubscribe":
        scope_stream, defaulted = _unsubscribe_stream(services, stream)
        plan.steps.append(
            Step(
                "suppress",
                address,
                kind="unsubscribe",
                source="unsubscribe",
                outcome="unsubscribe",
                reason=_reason(reason),
                stream=scope_stream,
                verified=verified,
                rule_id=rule_id,
                detail={**base_detail, "via": "feedback_loop", "stream_defaulted": defaulted},
            )
        )
    else:
        plan.steps.append(
            Step(
                "suppress",
                address,
                kind="complaint",
                source="complaint",
                outcome="complaint",
                reason=_reason(reason),
                stream=None,  # a spam complaint stops all mail to the address
                verified=verified,
                rule_id=rule_id,
                detail={**base_detail, "stream": stream},
            )
        )
    return plan


def _unverified_unsubscribe(ref: VerifiedRef, via: str, why: str) -> Step:
    return Step(
        "record",
        ref.recipient,
        kind="unverified_unsubscribe",
        source="unsubscribe",
        stream=safe_stream(ref.stream),
        detail={"via": via, "why": str(why), "issued_at": ref.issued_at.isoformat()},
    )


# ----------------------------------------------------------------------------------- execution


async def apply_plans(
    services: Services,
    plans: Sequence[tuple[int | None, _Plan]],
    *,
    db: Database | None = None,
) -> list[ApplyResult]:
    """Carry out (message id, plan) pairs in one transaction, then refresh the cache once.

    Under the write locks of every address the batch touches (taken in one statement, in key
    order): one read of the events these messages already wrote (a step whose event exists is
    skipped, so applying a message twice writes nothing new), one multi-row insert of the recorded
    and soft-bounce events, one count of the soft bounces in the window per address, then the
    suppressions with their events (``SuppressionService.write_suppressions``). The n-th soft bounce
    of an address in the batch sees the count it would have seen alone, so the threshold is
    crossed where it would have been one message at a time. After the commit the cache is
    refreshed from a fresh read of every suppressed address (see ``app.cache``).
    """
    settings = services.settings
    db = db or services.db
    applied = [0] * len(plans)
    recorded = [0] * len(plans)
    ignored = [plan.ignored for _, plan in plans]
    notes = [list(plan.notes) for _, plan in plans]
    done: list[list[dict[str, Any]]] = [[] for _ in plans]
    steps = [(i, mid, step) for i, (mid, plan) in enumerate(plans) for step in plan.steps]
    written: list[SuppressResult] = []
    requests: list[SuppressRequest] = []
    # Addresses of steps a message had already applied: the process that applied them may have
    # died between that commit and its cache write, so they are written through again.
    reapplied: set[str] = set()
    if steps:
        now = utcnow()
        addresses = sorted({step.address for _, _, step in steps})
        message_ids = sorted({mid for _, mid, _ in steps if mid is not None})
        async with db.write(addresses) as s:
            seen = await _applied_keys(s, addresses, message_ids)
            events: list[dict[str, Any]] = []
            soft: dict[str, list[tuple[int, int | None, Step]]] = {}
            for i, mid, step in steps:
                key = (step.address, mid, _event_kind(step), step.outcome)
                if mid is not None:
                    if key in seen:
                        ignored[i] += 1
                        reapplied.add(step.address)
                        notes[i].append(
                            f"{step.address}: {step.kind} already applied for this message"
                        )
                        continue
                    seen.add(key)
                done[i].append(step.to_json())
                if step.action == "suppress":
                    requests.append(_request(step, mid))
                    applied[i] += 1
                else:
                    events.append(_event_row(step, mid, now))
                    if step.action == "record":
                        recorded[i] += 1
                    else:
                        soft.setdefault(step.address, []).append((i, mid, step))
            if events:
                await s.execute(EVENTS_TABLE.insert(), events)
            if soft:
                since = now - timedelta(hours=settings.soft_bounce_window_h)
                counts = await _soft_counts(s, sorted(soft), since)
                for address, found in soft.items():
                    before = counts.get(address, 0) - len(found)
                    for nth, (i, mid, step) in enumerate(found, start=1):
                        count = before + nth
                        if count < settings.soft_bounce_threshold:
                            recorded[i] += 1
                            continue
                        applied[i] += 1
                        notes[i].append(f"{address}: soft bounce threshold reached")
                        requests.append(_soft_request(services, step, mid, count, now))
            if requests:
                written = await services.suppressions.write_suppressions(s, requests, now)
    if written:
        for req in requests:
            metrics.SUPPRESSIONS_WRITTEN.labels(req.outcome, req.source).inc()
    refresh = {r.address for r in written} | reapplied
    if refresh:
        try:
            await services.suppressions.refresh_cache(sorted(refresh), db=db)
        except DB_ERRORS as exc:
            # Committed, but the fresh read failed: stop trusting the replica until rebuilt.
            log.error("cache refresh after apply failed (%s); checks use the database", exc)
            services.suppressions.cache_dirty = True
    return [
        ApplyResult(applied[i], recorded[i], ignored[i], plan.verified, notes[i], done[i])
        for i, (_, plan) in enumerate(plans)
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
        Event.address.in_(list(addresses)), Event.message_id.in_(list(message_ids))
    )
    return {(a, m, k, o) for a, m, k, o in (await s.execute(q)).all()}


async def _soft_counts(
    s: AsyncSession, addresses: Sequence[str], since: datetime
) -> dict[str, int]:
    q = (
        select(Event.address, func.count(Event.id))
        .where(
            Event.address.in_(list(addresses)),
            Event.kind == "bounce",
            Event.outcome == "soft",
            Event.created_at >= since,
        )
        .group_by(Event.address)
    )
    return {str(a): int(n) for a, n in (await s.execute(q)).all()}


def _soft_request(
    services: Services, step: Step, message_id: int | None, count: int, now: datetime
) -> SuppressRequest:
    settings = services.settings
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


async def _preview(services: Services, plan: _Plan, *, message_id: int | None) -> ApplyResult:
    """What :func:`apply_plans` would do with ``plan`` (a dry run): reads only."""
    applied = recorded = 0
    ignored = plan.ignored
    notes = list(plan.notes)
    done: list[dict[str, Any]] = []
    for step in plan.steps:
        if message_id is not None and await _already_applied(services, step, message_id):
            ignored += 1
            notes.append(f"{step.address}: {step.kind} already applied for this message")
            continue
        if step.action == "suppress":
            applied += 1
        elif step.action == "record":
            recorded += 1
        elif await _soft_count(services, step) + 1 >= services.settings.soft_bounce_threshold:
            applied += 1
            notes.append(f"{step.address}: soft bounce threshold reached")
        else:
            recorded += 1
        done.append(step.to_json())
    return ApplyResult(applied, recorded, ignored, plan.verified, notes, done)


async def _soft_count(services: Services, step: Step) -> int:
    since = utcnow() - timedelta(hours=services.settings.soft_bounce_window_h)
    async with services.db.read() as s:
        counts = await _soft_counts(s, [step.address], since)
    return counts.get(step.address, 0)


async def _already_applied(services: Services, step: Step, message_id: int) -> bool:
    q = select(Event.id).where(
        Event.address == step.address,
        Event.message_id == message_id,
        Event.kind == _event_kind(step),
    )
    q = q.where(Event.outcome.is_(None) if step.outcome is None else Event.outcome == step.outcome)
    async with services.db.read() as s:
        return (await s.scalar(q.limit(1))) is not None


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


# ------------------------------------------------------------------------------------ helpers


def _strongest_per_recipient(results: list[RecipientResult]) -> dict[str, RecipientResult]:
    out: dict[str, RecipientResult] = {}
    for r in results:
        addr = try_normalise(r.recipient) if r.recipient else None
        if addr is None:
            continue
        best = out.get(addr)
        if best is None or _rank(r) > _rank(best):
            out[addr] = r
    return out


def _strongest(results: list[RecipientResult]) -> RecipientResult | None:
    return max(results, key=_rank, default=None)


def _rank(r: RecipientResult) -> int:
    # A failure outranks a delay report for the same recipient.
    return _RANK.get(r.outcome, 0) * 2 + (0 if r.action == "delayed" else 1)


def _record_from_result(
    kind: str,
    address: str,
    result: RecipientResult,
    stream: str | None,
    verified: bool,
    **detail: Any,
) -> Step:
    return Step(
        "record",
        address,
        kind=kind,
        source="bounce",
        outcome=None if kind == "delay" else result.outcome,
        reason=_reason(result.reason),
        stream=safe_stream(stream),
        verified=verified,
        rule_id=result.rule_id,
        status=(result.status or None) and result.status[:16],
        reply_code=result.reply_code,
        diagnostic=result.diagnostic or None,
        detail={k: v for k, v in detail.items() if v is not None},
    )


def _replace_action(step: Step, action: Literal["suppress", "record", "soft_bounce"]) -> Step:
    return replace(step, action=action)


def _reason(reason: str | None) -> str:
    return reason if reason and REASON_RE.match(reason) else "unclassified"


def safe_stream(stream: str | None) -> str | None:
    """A stream name from a header we do not control: valid (``app.settings.STREAM_RE``, at most
    64 characters, no NUL), or none at all. Anything stored from ``X-Stoplist-Stream`` goes
    through this."""
    if not stream:
        return None
    text = stream.strip().lower()
    if text == GLOBAL_SCOPE or not STREAM_RE.match(text):
        return None
    return text


def _unsubscribe_stream(services: Services, stream: str | None) -> tuple[str | None, bool]:
    """(scope stream or None for global, whether the default was used)."""
    stream = safe_stream(stream)
    if stream is not None:
        return stream, False
    default = services.settings.unsubscribe_default_stream
    return (None if default == GLOBAL_SCOPE else default), True
