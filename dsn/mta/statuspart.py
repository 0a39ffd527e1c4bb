"""The per-recipient block most appliance and legacy bounce formats share.

Their report is a list of records, one per failed recipient, written as lines rather than
prose: a line naming the recipient ("Failed Recipient: addr", "Addressed To: addr",
"<addr>:", "  * addr", "addr [reason]"), then the lines that explain it ("Reason: ...",
"Delivery failed for the following reason:", the remote server's reply), to the next
recipient line.  Some put the explanation under a heading of its own after all the
recipients ("Technical details:", "-------server message"): it then explains every
recipient left without one.

``read_records`` reads that shape; each module supplies the patterns of its format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from dsn.address import normalise_address
from dsn.mail import Mail
from dsn.model import MAX_RECIPIENTS
from dsn.mta.base import Found, delay_action, find_reply_code, find_status

__all__ = ["Layout", "read_records"]

_REASON_LINES: Final = 12


@dataclass(frozen=True, slots=True)
class Layout:
    """How one format writes its records.

    ``recipient``: a line naming one recipient, group ``addr`` (group ``why``, when the
    format writes the reason on the same line).  ``reason``: the line that opens a
    recipient's explanation, its text in group ``why`` (may be empty); ``None`` when every
    line after the recipient line explains it.  ``detached``: a heading whose following
    lines (to a blank line) explain the recipients that have no reason of their own.
    ``skip``: lines that are decoration, never part of a reason.  ``continued``: whether the
    lines after a reason line continue it (to a blank line), or only reason lines count.
    """

    recipient: re.Pattern[str]
    reason: re.Pattern[str] | None = None
    detached: re.Pattern[str] | None = None
    skip: re.Pattern[str] | None = None
    continued: bool = True


def read_records(
    mail: Mail, text: str, layout: Layout, *, action: str | None = None
) -> list[Found] | None:
    """The records of ``text`` (the part of the report between the format's own markers)."""
    found: dict[str, Found] = {}
    reasons: dict[str, list[str]] = {}
    current: str | None = None
    collecting = layout.reason is None
    detached: list[str] = []
    in_detached = False
    for line in text.split("\n"):
        stripped = line.strip()
        if layout.detached is not None and layout.detached.search(line):
            in_detached, current = True, None
            continue
        if in_detached:
            if stripped:
                if len(detached) < _REASON_LINES and not (
                    layout.skip is not None and layout.skip.search(line)
                ):
                    detached.append(stripped)
            elif detached:
                in_detached = False
            continue
        if "@" in line:
            match = layout.recipient.search(line)
            if match is not None:
                addr = normalise_address(match.group("addr"))
                if addr is not None and len(found) < MAX_RECIPIENTS:
                    current = addr
                    found.setdefault(addr, Found(recipient=addr))
                    lines = reasons.setdefault(addr, [])
                    why = match.groupdict().get("why")
                    if why and why.strip():
                        lines.append(why.strip())
                    collecting = layout.reason is None
                    continue
        if current is None:
            continue
        if not stripped:
            # A blank line ends an explanation begun (a second paragraph is prose).
            if reasons[current]:
                collecting = False
            continue
        if layout.skip is not None and layout.skip.search(line):
            continue
        if layout.reason is not None:
            opened = layout.reason.search(line)
            if opened is not None:
                why = (opened.groupdict().get("why") or "").strip()
                if why and len(reasons[current]) < _REASON_LINES:
                    reasons[current].append(why)
                collecting = layout.continued
                continue
        if collecting and len(reasons[current]) < _REASON_LINES:
            reasons[current].append(stripped)
    if not found:
        return None
    shared = " ".join(detached)
    for addr, entry in found.items():
        diagnostic = " ".join(reasons[addr]) or shared
        entry.diagnostic = diagnostic
        entry.status = find_status(diagnostic)
        entry.reply_code = find_reply_code(diagnostic)
        entry.action = action or delay_action(mail, diagnostic)
    return list(found.values())
