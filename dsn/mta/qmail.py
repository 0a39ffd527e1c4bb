"""qmail-send (and netqmail, qmail-ldap, vpopmail's deliveries, and Yahoo!, which uses its
format): "Hi. This is the qmail-send program at <host>." and "I'm afraid I wasn't able to
deliver your message to the following addresses.", then one block per failed recipient,
written by ``qmail-send.c``: the address as ``<addr>:`` on a line of its own, then the
words of whoever refused it, to a blank line:

    <user@example.org>:
    192.0.2.9 does not like recipient.
    Remote host said: 550 5.1.1 <user@example.org>: Recipient address rejected
    Giving up on 192.0.2.9.

qmail's own reasons end in a status in parentheses ("Sorry, no mailbox here by that name.
(#5.1.1)", vpopmail adds its name before it); a delivery given up after the queue lifetime
adds "I'm not going to try again; this message has been in the queue too long.".  The block
is the recipient's whole diagnostic: the paragraph above it ("This is a permanent error")
is not.  The report ends at "--- Below this line is a copy of the message.".

That layout is a published format, QSBMF (cr.yp.to/proto/qsbmf.txt): an intro paragraph
beginning "Hi. This is the", recipient paragraphs beginning ``<addr>:``, a break paragraph
beginning "---".  Other programs write it ("Hi. This is the mail transport program at",
"Hi. The MTA program at"); for them only the recipient paragraphs are read (no prose
scanning).
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import ADDRESS, normalise_address
from dsn.mail import Mail
from dsn.model import MAX_RECIPIENTS
from dsn.mta.base import Found, delay_action, find_reply_code, find_status, parse_text_report

__all__ = ["parse"]

_MARKER: Final = re.compile(
    r"^Hi\. This is the qmail|qmail-send program|^Sorry, we were unable to deliver your message"
    r"|^I'm afraid I wasn't able to deliver your message",
    re.M | re.I,
)
# The other openings seen with qmail's records ("This is the mail delivery agent at", ...)
# are ``x4``'s, which asks this parser first.
_QSBMF_INTRO: Final = re.compile(r"^(?:Hi\. This is the |Hi\. The MTA program at )", re.M)
# "<addr>:" alone (qmail-send) or followed by the reason (QSBMF allows both).
_BLOCK_HEAD: Final = re.compile(rf"^<{ADDRESS.pattern}>:[ \t]*(.*?)[ \t]*$")
_REASON_LINES: Final = 12


def parse(mail: Mail) -> list[Found] | None:
    if _MARKER.search(mail.text):
        return _blocks(mail) or parse_text_report(mail)
    if _QSBMF_INTRO.search(mail.text):
        return _blocks(mail)
    return None


def _blocks(mail: Mail) -> list[Found] | None:
    found: dict[str, Found] = {}
    reasons: dict[str, list[str]] = {}
    current: str | None = None
    for line in mail.text.split("\n"):
        head = _BLOCK_HEAD.match(line) if line.startswith("<") else None
        if head is not None:
            addr = normalise_address(head.group(1))
            current = None
            if addr is not None and addr not in found and len(found) < MAX_RECIPIENTS:
                current = addr
                found[addr] = Found(recipient=addr)
                reasons[addr] = [head.group(2)] if head.group(2) else []
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
        reason = " ".join(reasons[addr])
        entry.diagnostic = reason
        entry.status = find_status(reason)
        entry.reply_code = find_reply_code(reason)
        entry.action = delay_action(mail, reason)
    return [f for f in found.values() if f.diagnostic] or None
