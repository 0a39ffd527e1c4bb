"""RFC 3464 delivery status notifications (``message/delivery-status``).

The status part is a per-message block (Reporting-MTA, Arrival-Date, ...) followed by one
block per recipient (§2.3).  Real reports bend this: blocks without blank lines between them,
several recipients in one block, folded values, ``rfc822;`` type prefixes in odd case,
``Status: 5.0.0 (permanent failure)``, the status part sent as ``text/plain``.  Records are
therefore split on a repeated recipient field as well as on blank lines.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import normalise_address
from dsn.mail import Mail
from dsn.model import MAX_RECIPIENTS
from dsn.mta.base import Found, find_reply_code, find_status, scan_text

__all__ = ["parse", "parse_fields", "parse_records"]

_FIELD: Final = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")
_RECIPIENT_FIELDS: Final = frozenset(
    {
        "final-recipient",
        "original-recipient",
        "x-actual-recipient",
        "action",
        "status",
        "remote-mta",
        "diagnostic-code",
        "last-attempt-date",
        "will-retry-until",
        "final-log-id",
        "x-display-name",
    }
)
# Repeated Diagnostic-Code lines are joined up to this length; more than the classifier
# (classifiers.diagnostic.MAX_TEXT) and the stored diagnostic (dsn.model.DIAGNOSTIC_MAX) read.
_VALUE_MAX: Final = 8 * 1024
_TYPE_PREFIX: Final = re.compile(r"^\s*[\w-]+\s*;\s*")
_ACTIONS: Final = (
    ("fail", "failed"),
    ("delay", "delayed"),
    ("deliver", "delivered"),
    ("relay", "relayed"),
    ("expand", "expanded"),
)


def parse_fields(text: str) -> list[list[tuple[str, str]]]:
    """Blocks of ``(lower-case name, unfolded value)`` pairs."""
    blocks: list[list[tuple[str, str]]] = []
    # A value's folded lines are joined once at the end of its block: appending each line to
    # the value so far would copy it again per line (quadratic in a long folded field).
    current: list[tuple[str, list[str]]] = []
    for line in text.split("\n"):
        if not line.strip():
            if current:
                blocks.append(_unfold(current))
                current = []
            continue
        if line[0] in " \t" and current:
            current[-1][1].append(line.strip())
            continue
        match = _FIELD.match(line)
        if match is not None:
            current.append((match.group(1).lower(), [match.group(2).strip()]))
    if current:
        blocks.append(_unfold(current))
    return blocks


def _unfold(block: list[tuple[str, list[str]]]) -> list[tuple[str, str]]:
    return [(name, " ".join(pieces)) for name, pieces in block]


def normalise_action(value: str | None) -> str | None:
    if not value:
        return None
    lowered = value.strip().lower()
    for prefix, action in _ACTIONS:
        if lowered.startswith(prefix):
            return action
    return None


def strip_type(value: str) -> str:
    """``smtp; 550 ...`` -> ``550 ...``; ``dns; mx.example.com`` -> ``mx.example.com``."""
    return _TYPE_PREFIX.sub("", value, count=1).strip()


def parse_records(texts: list[str]) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The per-message fields and one dict of fields per recipient (at most
    ``MAX_RECIPIENTS`` records: see ``dsn.model``)."""
    per_message: dict[str, str] = {}
    records: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for text in texts:
        for block in parse_fields(text):
            if len(records) > MAX_RECIPIENTS:
                break
            if current.get("final-recipient") or current.get("original-recipient"):
                records.append(current)
                current = {}
            for name, value in block:
                if name not in _RECIPIENT_FIELDS:
                    per_message.setdefault(name, value)
                    continue
                # Original-Recipient may precede (most MTAs) or directly follow (Postfix,
                # SES) its Final-Recipient (§2.3 sets no order); after other fields of a
                # record that has a Final-Recipient, it opens the next record.
                starts_new = (name in current and name != "diagnostic-code") or (
                    name == "original-recipient"
                    and "final-recipient" in current
                    and next(reversed(current)) != "final-recipient"
                )
                if starts_new and current:
                    records.append(current)
                    current = {}
                if name in current:  # a second Diagnostic-Code line: keep both
                    # ... up to a bound: thousands of them would be copied once each.
                    if len(current[name]) < _VALUE_MAX:
                        current[name] = f"{current[name]} {value}"
                else:
                    current[name] = value
    if current:
        records.append(current)
    return per_message, [r for r in records if _has_content(r)][:MAX_RECIPIENTS]


def _has_content(record: dict[str, str]) -> bool:
    return any(k in record for k in ("final-recipient", "original-recipient", "action", "status"))


def better_status(status: str | None, diagnostic: str) -> str | None:
    """``Status: 5.0.0`` says little; a ``5.1.1`` of the same class in the reply says more."""
    in_text = find_status(diagnostic)
    if status is None:
        return in_text
    if in_text and in_text[0] == status[0] and status[2:] in ("0.0", "0.000"):
        return in_text
    return status


def records_to_found(per_message: dict[str, str], records: list[dict[str, str]]) -> list[Found]:
    found: list[Found] = []
    for record in records:
        final = normalise_address(record.get("final-recipient"))
        original = normalise_address(record.get("original-recipient"))
        actual = normalise_address(record.get("x-actual-recipient"))
        recipient = final or original or actual or ""
        diagnostic = strip_type(record.get("diagnostic-code", ""))
        status = find_status(record.get("status"))
        found.append(
            Found(
                recipient=recipient,
                diagnostic=diagnostic,
                status=better_status(status, diagnostic),
                reply_code=find_reply_code(diagnostic),
                action=normalise_action(record.get("action")),
                remote_mta=strip_type(record["remote-mta"]).lower() or None
                if "remote-mta" in record
                else None,
                reporting_mta=strip_type(per_message.get("reporting-mta", "")).lower() or None,
                original_recipient=original,
                last_attempt_date=record.get("last-attempt-date"),
                will_retry_until=record.get("will-retry-until"),
            )
        )
    return found


def parse(mail: Mail) -> list[Found] | None:
    if not mail.status_texts:
        return None
    per_message, records = parse_records(mail.status_texts)
    found = records_to_found(per_message, records)
    if not found:
        return None
    # The status part often lacks the server's words; the human-readable part has them.
    if any(not f.diagnostic for f in found) and mail.text:
        by_addr = {f.recipient: f for f in scan_text(mail.text)}
        for entry in found:
            if entry.diagnostic:
                continue
            human = by_addr.get(entry.recipient)
            if human is None and len(found) == 1 and len(by_addr) == 1:
                human = next(iter(by_addr.values()))
            if human is not None and human.diagnostic:
                entry.diagnostic = human.diagnostic
                entry.status = better_status(entry.status, human.diagnostic)
                entry.reply_code = entry.reply_code or human.reply_code
    return found
