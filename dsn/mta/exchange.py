"""Microsoft Exchange 2003 (``X-MS-Embedded-Report``, "did not reach the following
recipient(s):", the address followed by "on <date>") and the plain-text notices of
Exchange 2007+/Office 365 when they come without a delivery-status part."""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, parse_text_report

__all__ = ["parse"]

_MARKER: Final = re.compile(
    r"did not reach the following recipient|Delivery has failed to these recipients"
    r"|Your message did not reach some or all of the intended recipients"
    r"|could not be delivered to the following recipients",
    re.I,
)


def parse(mail: Mail) -> list[Found] | None:
    embedded = mail.message.get("X-MS-Embedded-Report") is not None
    if not embedded and not _MARKER.search(mail.text):
        return None
    return parse_text_report(mail)
