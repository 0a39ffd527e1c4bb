"""Exim (and the ISPs running it, e.g. 1&1): "This message was created automatically by mail
delivery software." followed by one indented block per failed address.

Exim also sets ``X-Failed-Recipients``, the authoritative list of failed addresses; the text
blocks sometimes name only a local part ("  kijitora") or a router ("save to xxxx").

"Mail failure - malformed recipient address": a header recipient Exim could not parse
(``exim -t``), one ``  <address text>: <error>`` line each ("kijitora@example.com
<neko@example.net>: malformed address: <neko@example.net> may not follow ...").  The
address in angle brackets is the one the sender meant (the text before it reads as a
display name); the message went to the other recipients.  No status code: Exim gives none.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import find_addresses
from dsn.mail import Mail
from dsn.mta.base import Found, parse_text_report, section, with_failed_recipients_header

__all__ = ["parse"]

_MARKER: Final = re.compile(
    r"^This message was created automatically by mail delivery software"
    r"|^A message that you sent (?:could not be delivered|has not yet been delivered|contained)",
    re.M | re.I,
)
_START: Final = re.compile(
    r"^(?:A message that you sent|The following address\(es\) failed|.*address\(es\)\s*$)",
    re.M | re.I,
)
_MALFORMED: Final = re.compile(r"^.*recipient addresses that were\s+incorrectly constructed:", re.M)
_MALFORMED_LINE: Final = re.compile(r"^[ \t]+(\S[^\n]*?):[ \t]+(\S[^\n]*)$", re.M)
_ANGLE: Final = re.compile(r"<([^<>]+)>")
_END: Final = re.compile(r"^-{2,}.*(?:copy of the message|original message)", re.M | re.I)


def parse(mail: Mail) -> list[Found] | None:
    if not _MARKER.search(mail.text) and not mail.header("X-Failed-Recipients"):
        return None
    if (
        not _MARKER.search(mail.text)
        and "exim" not in str(mail.message.get("Received", "")).lower()
    ):
        return None
    if _MALFORMED.search(mail.text):
        return _malformed(mail.text)
    found = parse_text_report(mail, start=_START, end=_END)
    return with_failed_recipients_header(mail, found)


def _malformed(text: str) -> list[Found] | None:
    found: list[Found] = []
    block = section(text, _MALFORMED, _END)
    for match in _MALFORMED_LINE.finditer(block):
        written, error = match.group(1), match.group(2).strip()
        angle = _ANGLE.search(written)
        addrs = find_addresses(angle.group(1) if angle else written)
        if addrs and all(f.recipient != addrs[0] for f in found):
            found.append(Found(recipient=addrs[0], diagnostic=error, action="failed"))
    return found or None
