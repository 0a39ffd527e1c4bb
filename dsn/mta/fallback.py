"""The last resort for a message that looks like a bounce but no parser claimed.

Only addresses in a recipient position (a line of their own, ``<addr>:``, "delivery to
addr failed") count, and only when an SMTP error (reply code, enhanced status) or a
delivery-failure phrase is next to them: an address that is merely mentioned must not
become a suppression.  ``X-Failed-Recipients`` is trusted.  When the text names no recipient at all, the returned original's
single ``To`` address is used, but only if the text states a failure.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import find_addresses
from dsn.mail import Mail, header_text
from dsn.mta.base import (
    Found,
    bounce_own_addresses,
    delay_action,
    scan_text,
    with_failed_recipients_header,
)

__all__ = ["parse"]

_ERROR_NEAR: Final = re.compile(
    r"(?<![\d.])[245]\d\d(?:[ -]|$)|(?<![\d.])[245]\.\d{1,3}\.\d{1,3}\b|user unknown|unknown user"
    r"|no such|does not exist|not found|mailbox|quota|reject|refused|denied|invalid|disabled"
    r"|unavailable|not listed|unrouteable|unknown|blocked|spam|fail|could not|couldn't|timed? ?out"
    r"|expired|error|unable|not reach|undeliverable|not be delivered|not delivered|locked"
    r"|bounced|delayed|retr(?:y|ied)|suspend|full|too large|exceed|loop|abort",
    re.I,
)


def parse(mail: Mail) -> list[Found] | None:
    exclude = bounce_own_addresses(mail)
    found = [f for f in scan_text(mail.text, exclude=exclude) if _ERROR_NEAR.search(f.diagnostic)]
    # X-Failed-Recipients is a machine-written statement, trusted even here.
    found = with_failed_recipients_header(mail, found) or []
    if not found and mail.original is not None and _ERROR_NEAR.search(mail.text):
        to = [a for a in find_addresses(header_text(mail.original, "To")) if a not in exclude]
        if len(to) == 1:
            found = [Found(recipient=to[0], diagnostic=_error_lines(mail.text))]
    for entry in found:
        entry.action = entry.action or delay_action(mail, entry.diagnostic)
    return found or None


def _error_lines(text: str) -> str:
    lines = [line.strip() for line in text.split("\n") if _ERROR_NEAR.search(line)]
    return " ".join(lines[:4])
