"""Gmail's plain-text bounces (before it sent RFC 3464 reports): "Delivery to the following
recipient failed permanently:" / "has been delayed:", the address on its own line, then
"Technical details of permanent failure:".  Gmail also sets ``X-Failed-Recipients``."""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, parse_text_report, with_failed_recipients_header

__all__ = ["parse"]

_MARKER: Final = re.compile(
    r"^(?:Delivery to the following recipients? (?:failed|has been delayed)"
    r"|\*\* (?:Message not delivered|Address not found|Message blocked) \*\*"
    r"|Technical details of (?:permanent|temporary) failure)",
    re.M | re.I,
)


def parse(mail: Mail) -> list[Found] | None:
    if "google" not in mail.sender or not _MARKER.search(mail.text):
        return None
    return with_failed_recipients_header(mail, parse_text_report(mail))
