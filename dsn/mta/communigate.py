"""CommuniGate Pro: one block per failed recipient, "Failed to deliver to '<addr>'", then
the module that failed and what it reports, to a blank line:

    Failed to deliver to '<user@example.org>'
    SMTP module(domain example.org) reports:
     host mx.example.org says:
     550 5.1.1 User unknown

    Failed to deliver to '<user@example.net>'
    LOCAL module(account user) reports:
     account is full (quota exceeded)

The "module(...) reports:" line is CommuniGate's own; a block is read only with it.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import ADDRESS, normalise_address
from dsn.mail import Mail
from dsn.model import MAX_RECIPIENTS
from dsn.mta.base import Found, delay_action, find_reply_code, find_status

__all__ = ["parse"]

_HEAD: Final = re.compile(rf"^[ \t]*Failed to deliver to '<?{ADDRESS.pattern}>?'")
_MODULE: Final = re.compile(r"^[ \t]*[A-Z]+ module\([^)\n]*\) reports:", re.M)
_REASON_LINES: Final = 12


def parse(mail: Mail) -> list[Found] | None:
    if "Failed to deliver to '" not in mail.text or not _MODULE.search(mail.text):
        return None
    found: dict[str, Found] = {}
    reasons: dict[str, list[str]] = {}
    current: str | None = None
    for line in mail.text.split("\n"):
        head = _HEAD.match(line) if "Failed to deliver" in line else None
        if head is not None:
            addr = normalise_address(head.group(1))
            current = None
            if addr is not None and addr not in found and len(found) < MAX_RECIPIENTS:
                current = addr
                found[addr] = Found(recipient=addr)
                reasons[addr] = []
            continue
        if current is None:
            continue
        if not line.strip():
            if reasons[current]:
                current = None
            continue
        if len(reasons[current]) < _REASON_LINES:
            reasons[current].append(line.strip())
    for addr, entry in found.items():
        words = " ".join(reasons[addr])
        entry.diagnostic = words
        entry.status = find_status(words)
        entry.reply_code = find_reply_code(words)
        entry.action = delay_action(mail, words)
    return list(found.values()) or None
