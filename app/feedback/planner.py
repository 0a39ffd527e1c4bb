"""Planning: what a parsed message means for the suppression list, decided without any I/O.

``plan_message(analysis, envelope, settings, signer)`` returns a :class:`Plan` (the steps to
write); ``app.feedback.applier`` carries it out. Nothing here reads the database, so the policy
is testable with settings and a signer alone. Who a message is about (a signed reference wins over
the report's text; a reference that fails to verify is recorded, never applied) and what each
outcome does: docs/architecture.md ("What a parsed message does").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Literal

from app.addresses import try_normalise
from app.settings import Settings
from app.signing import RejectReason, Signer, TokenError, VerifiedRef
from app.streams import GLOBAL_SCOPE, STREAM_RE
from app.suppression.model import REASON_RE
from arf import normalise_feedback_type, outcome_for
from dsn.model import MessageAnalysis, RecipientResult

__all__ = ["Envelope", "Plan", "Step", "plan_message", "safe_stream", "unsubscribe_stream"]

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


@dataclass(slots=True)
class Plan:
    """What one message means: the steps to carry out, and what was left alone and why."""

    steps: list[Step] = field(default_factory=list)
    ignored: int = 0
    verified: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Inputs:
    settings: Settings
    signer: Signer | None


def plan_message(
    analysis: MessageAnalysis, envelope: Envelope, settings: Settings, signer: Signer | None
) -> Plan:
    """What ``analysis`` (received with ``envelope``) means under ``settings``; ``signer`` checks
    signed references (None: no signing keys, reports are taken as parsed)."""
    ctx = _Inputs(settings, signer)
    signer = ctx.signer
    if signer is not None:
        unsub = [r for r in envelope.rcpt_to if signer.is_unsubscribe_address(r)]
        if unsub:
            return _plan_mailto(ctx, unsub[0])
    return _plan(ctx, analysis, envelope)


def _plan_mailto(ctx: _Inputs, rcpt: str) -> Plan:
    signer = ctx.signer
    if signer is None:
        return Plan(ignored=1, notes=["unsubscribe address, but no signing keys configured"])
    try:
        ref = _verify_mailto(signer, rcpt)
    except TokenError as exc:
        note = f"mailto unsubscribe refused: {exc.reason} ({exc.detail})"
        if exc.expired_ref is None:
            return Plan(ignored=1, notes=[note])
        step = _unverified_unsubscribe(exc.expired_ref, "mailto", exc.reason)
        return Plan(steps=[step], notes=[note])
    stream, defaulted = unsubscribe_stream(ctx.settings, ref.stream)
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
    return Plan(steps=[step], verified=True)


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


def _plan(ctx: _Inputs, analysis: MessageAnalysis, envelope: Envelope) -> Plan:
    if analysis.kind == "complaint":
        return _plan_complaint(ctx, analysis)
    if analysis.kind in ("bounce", "delay"):
        return _plan_bounce(ctx, analysis, envelope)
    return Plan(ignored=len(analysis.results), notes=[f"{analysis.kind}: nothing to apply"])


def _verify_refs(
    ctx: _Inputs, candidates: list[tuple[str, str]], notes: list[str]
) -> tuple[VerifiedRef | None, list[str]]:
    """(the verified reference, failures) over (where, value) candidates.

    ``where`` is ``return_path`` (an address) or ``ref`` (an X-Stoplist-Ref token). A value that is
    not one of our references at all (``malformed``: an older unsigned VERP address with the same
    prefix, another system's header) counts as absent, with a note: refusing the report for it
    would stop nothing, since a forger can leave the value out.
    """
    signer = ctx.signer
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


def _plan_bounce(ctx: _Inputs, analysis: MessageAnalysis, envelope: Envelope) -> Plan:
    settings = ctx.settings
    candidates = [("return_path", r) for r in envelope.rcpt_to]
    if analysis.ref_token:
        candidates.append(("ref", analysis.ref_token))
    notes: list[str] = []
    ref, failures = _verify_refs(ctx, candidates, notes)
    by_recipient = _strongest_per_recipient(analysis.results)
    plan = Plan(verified=ref is not None and not failures, notes=notes)
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
    plan: Plan,
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


def _plan_complaint(ctx: _Inputs, analysis: MessageAnalysis) -> Plan:
    settings = ctx.settings
    ft = normalise_feedback_type(analysis.feedback_type)
    candidates: list[tuple[str, str]] = []
    if analysis.ref_token:
        candidates.append(("ref", analysis.ref_token))
    if analysis.original_sender:
        # The returned message's envelope sender: our signed return path, when we used one.
        candidates.append(("return_path", analysis.original_sender))
    notes: list[str] = []
    ref, failures = _verify_refs(ctx, candidates, notes)
    usable = [r for r in analysis.results if try_normalise(r.recipient)]
    named = (
        replace(usable[0], recipient=try_normalise(usable[0].recipient) or "") if usable else None
    )
    plan = Plan(verified=ref is not None and not failures, notes=notes)
    base_detail: dict[str, Any] = {
        "feedback_type": ft,
        "source_ip": analysis.source_ip,
        "reporter": analysis.mta,
        "original_message_id": analysis.original_message_id,
    }

    if failures or (ref is None and settings.require_signed_reports):
        why = ", ".join(failures) if failures else "unsigned"
        _complaint_not_applied(plan, named, analysis, base_detail, why)
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
    plan.steps.append(
        _complaint_step(settings, ft, address, stream, verified, rule_id, base_detail)
    )
    return plan


def _complaint_not_applied(
    plan: Plan,
    named: RecipientResult | None,
    analysis: MessageAnalysis,
    base_detail: dict[str, Any],
    why: str,
) -> None:
    plan.verified = False
    plan.notes.append(f"complaint not applied: {why}")
    if named is None:
        plan.ignored += 1
        return
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


def _complaint_step(
    settings: Settings,
    ft: str,
    address: str,
    stream: str | None,
    verified: bool,
    rule_id: str | None,
    base_detail: dict[str, Any],
) -> Step:
    """The step of an applied complaint of feedback type ``ft`` about ``address``."""
    outcome, reason = outcome_for(ft)
    if ft in _COMPLAINT_TYPES_RECORDED:
        return Step(
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
    if outcome == "unsubscribe":
        scope_stream, defaulted = unsubscribe_stream(settings, stream)
        return Step(
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
    return Step(
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


def _unverified_unsubscribe(ref: VerifiedRef, via: str, why: str) -> Step:
    return Step(
        "record",
        ref.recipient,
        kind="unverified_unsubscribe",
        source="unsubscribe",
        stream=safe_stream(ref.stream),
        detail={"via": via, "why": str(why), "issued_at": ref.issued_at.isoformat()},
    )


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
    if len(stream) <= _CACHED_STREAM_LEN:  # a log or a batch of reports repeats its streams
        return _safe_stream(stream)
    return _safe_stream.__wrapped__(stream)


_CACHED_STREAM_LEN = 128


@lru_cache(maxsize=1024)
def _safe_stream(stream: str) -> str | None:
    text = stream.strip().lower()
    if text == GLOBAL_SCOPE or not STREAM_RE.match(text):
        return None
    return text


def unsubscribe_stream(settings: Settings, stream: str | None) -> tuple[str | None, bool]:
    """(scope stream or None for global, whether the default was used)."""
    stream = safe_stream(stream)
    if stream is not None:
        return stream, False
    default = settings.unsubscribe_default_stream
    return (None if default == GLOBAL_SCOPE else default), True
