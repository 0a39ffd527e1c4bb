"""Exim (and the ISPs running it, e.g. 1&1): "This message was created automatically by mail
delivery software." followed by one indented block per failed address.

Exim also sets ``X-Failed-Recipients``, the authoritative list of failed addresses; the text
blocks sometimes name only a local part ("  kijitora") or a router ("save to xxxx").
"""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, parse_text_report, with_failed_recipients_header

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
_END: Final = re.compile(r"^-{2,}.*(?:copy of the message|original message)", re.M | re.I)


def parse(mail: Mail) -> list[Found] | None:
    if not _MARKER.search(mail.text) and not mail.header("X-Failed-Recipients"):
        return None
    if (
        not _MARKER.search(mail.text)
        and "exim" not in str(mail.message.get("Received", "")).lower()
    ):
        return None
    found = parse_text_report(mail, start=_START, end=_END)
    return with_failed_recipients_header(mail, found)
