"""Why the analysis said what it said about one message (``stoplist explain FILE``).

The explanation is rebuilt beside the analysis rather than recorded inside it, so the hot path
pays nothing for it: the parsers are asked again in their written order (which declined, which
claimed), the recipient's lines are looked up in the text the parsers read, and the deciding rule
is looked up by the id the classification stored, with its file, matchers, source and examples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

from classifiers import Rule, default_rules
from classifiers.diagnostic import normalise
from classifiers.providers import detect_provider, provider_from_text
from dsn.address import domain_of
from dsn.analysis import _OTHER_SERVER, _PROVIDER_PARSERS, analyse_message
from dsn.mail import Mail, normalise_line_endings, read_mail
from dsn.model import DEFAULT_OPTIONS, AnalysisOptions, MessageAnalysis, RecipientResult
from dsn.mta import PARSERS

__all__ = ["MessageExplanation", "RecipientExplanation", "explain_message", "rule_details"]

_EVIDENCE_MAX: Final = 8
_EXAMPLES_SHOWN: Final = 3
_WHY_KIND: Final = {
    "complaint": "a feedback report (RFC 5965 ARF, or a provider's complaint notice): the arf "
    "package read its feedback type and recipients",
    "auto_reply": "an automatic reply (RFC 3834 Auto-Submitted, vacation wording): nothing to "
    "suppress",
    "unknown": "no parser claimed it and it does not look like a bounce: nothing to suppress",
    "delivery_report": "every recipient was delivered, relayed or expanded: nothing to suppress",
    "receipt": "a read receipt (RFC 8098 message disposition notification): nothing to suppress",
    "delay": "delivery is still being tried: recorded, nothing suppressed yet",
    "bounce": "a bounce",
}


@dataclass(frozen=True, slots=True)
class Evidence:
    """A line of the report naming the recipient (``where``: report text or status part)."""

    where: str
    line: int
    text: str


@dataclass(frozen=True, slots=True)
class RecipientExplanation:
    """One recipient: the lines that named it, the signals read and the rule that decided."""

    result: RecipientResult
    evidence: list[Evidence]
    provider: str | None
    rule: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "recipient": self.result.recipient,
            "original_recipient": self.result.original_recipient,
            "lines": [{"where": e.where, "line": e.line, "text": e.text} for e in self.evidence],
            "signals": {
                "action": self.result.action,
                "status": self.result.status,
                "reply_code": self.result.reply_code,
                "remote_mta": self.result.remote_mta,
                "provider": self.provider,
                # The sending MTA's own category (PowerMTA): shown, never deciding.
                "vendor_category": self.result.vendor_category,
                "diagnostic": self.result.diagnostic,
            },
            "decision": {
                "outcome": self.result.outcome,
                "reason": self.result.reason,
                "rule_id": self.result.rule_id,
            },
            "rule": self.rule,
        }


@dataclass(frozen=True, slots=True)
class MessageExplanation:
    """The whole message: its kind, the parsers tried and each recipient's explanation."""

    analysis: MessageAnalysis
    declined: list[str]
    recipients: list[RecipientExplanation] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.analysis.kind,
            "why": _WHY_KIND.get(self.analysis.kind, self.analysis.kind),
            "mta": self.analysis.mta,
            "parsers_declined": self.declined,
            "stream": self.analysis.stream,
            "original_message_id": self.analysis.original_message_id,
            "recipients": [r.to_json() for r in self.recipients],
        }

    def to_text(self) -> str:
        return render_text(self.to_json())


def explain_message(
    raw: bytes, *, options: AnalysisOptions = DEFAULT_OPTIONS
) -> MessageExplanation:
    """Analyse ``raw`` and explain the result.  Raises ``ParseError`` like ``analyse_message``."""
    analysis = analyse_message(raw, options=options)
    mail = read_mail(normalise_line_endings(bytes(raw)))
    declined = _declined(analysis)
    recipients = [
        RecipientExplanation(
            result=result,
            evidence=_evidence(mail, result),
            provider=_provider(result, analysis.mta),
            rule=rule_details(result.rule_id, result.diagnostic),
        )
        for result in analysis.results
    ]
    return MessageExplanation(analysis=analysis, declined=declined, recipients=recipients)


def rule_details(rule_id: str | None, diagnostic: str | None = None) -> dict[str, Any] | None:
    """The rule behind a stored ``rule_id``: where it lives, what it matches, why it says so.

    With the ``diagnostic`` it decided on, ``matched_text`` names the rule's text patterns that
    matched it (a rule lists many phrasings; the reader wants the one that applied).
    """
    if not rule_id:
        return None
    rule = _rules_by_id().get(rule_id)
    if rule is None:
        return {"id": rule_id, "note": _special_rule(rule_id)}
    examples = [e.diagnostic or e.status or str(e.reply_code) for e in rule.examples]
    return {
        "id": rule.id,
        "file": rule.origin,
        "outcome": rule.outcome.value,
        "reason": rule.reason.value,
        "matches": {
            "provider": sorted(rule.provider),
            "reply": sorted(rule.reply),
            "status": list(rule.status),
            "text_patterns": len(rule.text),
        },
        "matched_text": _matched_text(rule, diagnostic),
        "source": rule.source,
        "note": rule.note,
        "examples": examples[:_EXAMPLES_SHOWN],
    }


def _special_rule(rule_id: str) -> str:
    if rule_id == "unclassified":
        return "no rule matched: the failure counts as soft (never hard without a rule)"
    if rule_id.startswith(("arf-", "amazonses-complaint-")):
        return "decided by the feedback report's type (arf package), not by the reply rules"
    if rule_id.startswith("vendor-"):
        return (
            "decided by the sender's own category (events/classify.py VENDOR_CATEGORIES): "
            "the event carried no reply to classify"
        )
    if rule_id.startswith("event-"):
        return "decided by the kind of delivery event (events/classify.py), not by a reply"
    return "not a rule of the current rule set (changed since the message was analysed?)"


def _rules_by_id() -> dict[str, Rule]:
    return {rule.id: rule for rule in default_rules().rules}


def _matched_text(rule: Rule, diagnostic: str | None) -> list[str]:
    if not rule.text or not diagnostic:
        return []
    text = normalise(diagnostic).text.lower()
    return [p for p in rule.text if re.search(p, text, re.I)]


def _declined(analysis: MessageAnalysis) -> list[str]:
    """The bounce parsers tried, in their written order, before the one that claimed it.

    Feedback reports and auto-replies are recognised before any bounce parser runs.
    """
    if analysis.kind in ("complaint", "auto_reply"):
        return []
    declined: list[str] = []
    for name, _parser in PARSERS:
        if name == analysis.mta:
            break
        declined.append(name)
    return declined


def _provider(result: RecipientResult, mta: str | None = None) -> str | None:
    """The provider the classifier was given or found (``dsn.analysis._reply_source``; the
    Reporting-MTA is not kept in the result, so only the parser's provider stands for it)."""
    if not result.remote_mta and not (
        result.diagnostic and _OTHER_SERVER.search(result.diagnostic)
    ):
        named = _PROVIDER_PARSERS.get(mta or "")
        if named is not None:
            return named
    provider = detect_provider(
        remote_mta=result.remote_mta, recipient_domain=domain_of(result.recipient)
    )
    return provider or (
        provider_from_text(result.diagnostic.lower()) if result.diagnostic else None
    )


def _evidence(mail: Mail, result: RecipientResult) -> list[Evidence]:
    """Lines of the report text and the status parts that name the recipient."""
    addresses = (result.recipient, result.original_recipient, result.reported_recipient)
    wanted = {a.lower() for a in addresses if a}
    found: list[Evidence] = []
    sources = [("status part", text) for text in mail.status_texts]
    sources.append(("report text", mail.text))
    for where, text in sources:
        for number, line in enumerate(text.split("\n"), 1):
            lowered = line.lower()
            if any(address in lowered for address in wanted):
                found.append(Evidence(where=where, line=number, text=line.strip()[:300]))
                if len(found) >= _EVIDENCE_MAX:
                    return found
    return found


def render_text(obj: dict[str, Any]) -> str:
    """The explanation as a person reads it (``stoplist explain`` without ``--json``)."""
    out = [f"kind: {obj['kind']} ({obj['why']})"]
    tried = ", ".join(obj["parsers_declined"]) or "none"
    out.append(f"parser: {obj['mta'] or 'none'} (declined before it: {tried})")
    if obj.get("stream"):
        out.append(f"stream: {obj['stream']}")
    for rcpt in obj["recipients"]:
        decision = rcpt["decision"]
        out.append("")
        line = f"recipient {rcpt['recipient']}"
        if rcpt.get("original_recipient"):
            line += f" (original recipient {rcpt['original_recipient']})"
        out.append(f"{line}: {decision['outcome']} / {decision['reason']}")
        for ev in rcpt["lines"]:
            out.append(f"  {ev['where']} line {ev['line']}: {ev['text']}")
        signals = rcpt["signals"]
        out.append(
            "  signals: "
            + ", ".join(
                f"{k}={signals[k]}"
                for k in (
                    "action",
                    "status",
                    "reply_code",
                    "remote_mta",
                    "provider",
                    "vendor_category",
                )
                if signals.get(k) is not None
            )
        )
        if signals["diagnostic"]:
            out.append(f"  diagnostic: {signals['diagnostic'][:300]}")
        out.extend(_rule_lines(rcpt["rule"], decision["rule_id"]))
    return "\n".join(out) + "\n"


def _rule_lines(rule: dict[str, Any] | None, rule_id: str | None) -> list[str]:
    if rule is None:
        return [f"  rule: {rule_id}"]
    if "file" not in rule:
        return [f"  rule: {rule['id']} — {rule['note']}"]
    lines = [f"  rule: {rule['id']} ({rule['file']}) -> {rule['outcome']} / {rule['reason']}"]
    matches = {k: v for k, v in rule["matches"].items() if v}
    lines.append(f"    matches: {matches}")
    lines.extend(f"    matched text: {pattern}" for pattern in rule["matched_text"])
    lines.append(f"    source: {rule['source']}")
    if rule["note"]:
        lines.append(f"    note: {rule['note']}")
    lines.extend(f"    example: {example}" for example in rule["examples"])
    return lines
