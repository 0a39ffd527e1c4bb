"""PowerMTA's delivery report (subject "Delivery report", "Hello, this is the mail server
on <host>."): an RFC 3464 status part whose recipient blocks carry
``X-PowerMTA-BounceCategory`` (``bad-mailbox``, ``quota-issues``, ``spam-related``, ...).

The status part is read by ``rfc3464``'s own reader; the category is kept beside each
recipient as ``vendor_category``, a second opinion recorded for the reader.  It never
replaces the address's status or reply: PowerMTA derives it from the same reply with its
own pattern file, and a site's local edits to that file change it.  Tried before
``rfc3464`` only so that the category is not dropped.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import normalise_address
from dsn.mail import Mail
from dsn.mta import rfc3464
from dsn.mta.base import Found

__all__ = ["parse"]

_FIELD: Final = re.compile(
    r"^(final-recipient|x-powermta-bouncecategory)[ \t]*:[ \t]*(\S[^\n]*)$", re.M | re.I
)
_HELLO: Final = re.compile(r"^Hello, this is the mail server on ", re.M)


def parse(mail: Mail) -> list[Found] | None:
    # Case-sensitive, as PowerMTA writes it: a case-insensitive search of a large status
    # part would cost more than the rest of the analysis.
    status = "\n".join(mail.status_texts)
    if "X-PowerMTA-BounceCategory" not in status and not (
        "Delivery report" in mail.subject and _HELLO.search(mail.text)
    ):
        return None
    found = rfc3464.parse(mail)
    if not found:
        return None
    categories: dict[str, str] = {}
    recipient: str | None = None
    for match in _FIELD.finditer(status):
        if match.group(1).lower() == "final-recipient":
            recipient = normalise_address(rfc3464.strip_type(match.group(2)))
        elif recipient is not None:
            categories.setdefault(recipient, match.group(2).strip().lower())
    for entry in found:
        entry.vendor_category = categories.get(entry.recipient)
    return found
