"""Result types of the bounce analysis: one ``MessageAnalysis`` per message,
one ``RecipientResult`` per recipient the message reports on."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = [
    "DEFAULT_OPTIONS",
    "MAX_RECIPIENTS",
    "AnalysisOptions",
    "MessageAnalysis",
    "MessageKind",
    "RecipientResult",
]

# Recipients read from one message, at most.  A report is about one SMTP transaction, and
# few MTAs take more recipients than this in one (Postfix's smtpd_recipient_limit defaults
# to 1000; RFC 5321 §4.5.3.1.8 asks for at least 100).  A message naming more is hostile or
# broken: the first ones are read, the rest ignored, so its cost stays bounded (parsing,
# classification, and one stored event per recipient).
MAX_RECIPIENTS: Final = 1000

MessageKind = Literal[
    "bounce", "delay", "complaint", "auto_reply", "delivery_report", "receipt", "unknown"
]


@dataclass(frozen=True, slots=True)
class AnalysisOptions:
    """How our own outgoing mail is marked, so the returned original can be read back.

    ``verp_pattern`` describes the envelope sender we use, either as a regular expression
    with named groups ``local`` and ``domain`` (or a single group ``recipient``), or as a
    template such as ``b+{local}={domain}@bounces.example.net`` (``*`` matches anything).
    """

    recipient_header: str = "X-Stoplist-Recipient"
    stream_header: str = "X-Stoplist-Stream"
    ref_header: str = "X-Stoplist-Ref"
    verp_pattern: str | None = None


DEFAULT_OPTIONS: Final = AnalysisOptions()


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """What one bounce says about one recipient, classified."""

    recipient: str
    action: str
    outcome: str
    reason: str
    rule_id: str
    original_recipient: str | None = None
    status: str | None = None
    reply_code: int | None = None
    diagnostic: str = ""
    remote_mta: str | None = None
    last_attempt_date: str | None = None
    will_retry_until: str | None = None
    stream: str | None = None
    # The sending MTA's own category for the failure (PowerMTA's bounce category): a second
    # opinion shown beside ours, never an input to the outcome.
    vendor_category: str | None = None
    # The address the report itself named, when our own identification of the recipient
    # (X-Stoplist-Recipient, VERP) replaced it: a forwarding or alias target.
    reported_recipient: str | None = None

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "recipient": self.recipient,
            "outcome": self.outcome,
            "reason": self.reason,
            "status": self.status,
            "reply_code": self.reply_code,
            "action": self.action,
            "diagnostic": self.diagnostic,
            "remote_mta": self.remote_mta,
            "rule_id": self.rule_id,
            "stream": self.stream,
        }
        if self.vendor_category is not None:
            row["vendor_category"] = self.vendor_category
        if self.reported_recipient is not None:
            row["reported_recipient"] = self.reported_recipient
        return row


@dataclass(frozen=True, slots=True)
class MessageAnalysis:
    """Everything the analysis learnt from one message."""

    kind: MessageKind
    results: list[RecipientResult] = field(default_factory=list)
    mta: str | None = None
    original_message_id: str | None = None
    original_sender: str | None = None
    ref_token: str | None = None
    stream: str | None = None
    verp_recipient: str | None = None
    feedback_type: str | None = None
    source_ip: str | None = None

    def to_json(self, file: str | None = None) -> dict[str, Any]:
        """The JSON Lines object of ``stoplist parse --jsonl`` (dump with sorted keys)."""
        results: list[dict[str, Any]] = []
        for result in self.results:
            row = result.to_json()
            if self.kind == "complaint":
                row["feedback_type"] = self.feedback_type
                row["source_ip"] = self.source_ip
            results.append(row)
        obj: dict[str, Any] = {
            "file": file,
            "kind": self.kind,
            "error": None,
            "mta": self.mta,
            "results": results,
        }
        if self.ref_token is not None:
            # Unverified here: the service checks its signature and takes recipient and stream
            # from it (a redacted complaint has no result without it).
            obj["ref_token"] = self.ref_token
        return obj


_WS = re.compile(r"\s+")
DIAGNOSTIC_MAX: Final = 1000


def normalise_diagnostic(text: str | None) -> str:
    """Collapse whitespace and bound the length of a diagnostic text."""
    if not text:
        return ""
    return _WS.sub(" ", text).strip()[:DIAGNOSTIC_MAX]
