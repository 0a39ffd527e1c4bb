"""Courier MTA (``courier/module.dsn``'s templates, see courierdsn(8)) when its report reaches
us without the ``message/delivery-status`` part ``rfc3464`` reads first (forwarded or
re-encoded as text).

"This is a delivery status notification from <host>, running the Courier mail server,
version X.", then a section per outcome under a centred heading -- "UNDELIVERABLE MAIL"
("Your message to the following recipients cannot be delivered:"), "DELAYS IN DELIVERING
YOUR MESSAGE" (a warning), "SUCCESSFUL DELIVERIES" / "RELAYED" -- each recipient as
``<addr>:`` followed by the host it talked to and the session (``>>> RCPT TO:<addr>``,
``<<< 550 5.1.1 ...``) or Courier's own words ("No such domain.", "DNS lookup failed.").
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import ADDRESS, normalise_address
from dsn.mail import Mail
from dsn.model import MAX_RECIPIENTS
from dsn.mta.base import Found, find_reply_code, find_status

__all__ = ["parse"]

_MARKER: Final = re.compile(r"running the Courier mail server", re.I)
_HEADINGS: Final = (
    (re.compile(r"^[ \t]*UNDELIVERABLE MAIL[ \t]*$"), "failed"),
    (re.compile(r"^[ \t]*DELAYS IN DELIVERING YOUR MESSAGE[ \t]*$"), "delayed"),
    (re.compile(r"^[ \t]*SUCCESSFUL DELIVER(?:Y|IES)[ \t]*$"), "delivered"),
    (re.compile(r"^[ \t]*RELAYED[ \t]*(?:MAIL)?[ \t]*$"), "relayed"),
)
_RECIPIENT: Final = re.compile(rf"^<{ADDRESS.pattern}>:[ \t]*$")
_RULE: Final = re.compile(r"^-{20,}[ \t]*$")
_REASON_LINES: Final = 12


def parse(mail: Mail) -> list[Found] | None:
    if not _MARKER.search(mail.text):
        return None
    found: dict[str, Found] = {}
    reasons: dict[str, list[str]] = {}
    action: str | None = None
    current: str | None = None
    for line in mail.text.split("\n"):
        heading = next((name for pattern, name in _HEADINGS if pattern.match(line)), None)
        if heading is not None:
            action, current = heading, None
            continue
        if action is None:
            continue
        if _RULE.match(line):
            current = None
            continue
        match = _RECIPIENT.match(line) if line.startswith("<") else None
        if match is not None:
            addr = normalise_address(match.group(1))
            current = None
            if addr is not None and addr not in found and len(found) < MAX_RECIPIENTS:
                current = addr
                found[addr] = Found(recipient=addr, action=action)
                reasons[addr] = []
            continue
        if current is not None and line.strip() and len(reasons[current]) < _REASON_LINES:
            reasons[current].append(line.strip())
    for addr, entry in found.items():
        said = [r for r in reasons[addr] if r.startswith("<<<")]
        # The remote server's words first: they, not the command sent, explain the failure.
        words = " ".join([r[3:].strip() for r in said] or reasons[addr])
        entry.diagnostic = words
        entry.status = find_status(words)
        entry.reply_code = find_reply_code(words)
    return list(found.values()) or None
