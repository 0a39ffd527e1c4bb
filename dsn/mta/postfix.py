"""Postfix bounces whose delivery-status part is missing or empty ("Delivery report
unavailable"): the human-readable part has ``<addr>: host ... said: 550 ...`` blocks."""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, parse_text_report

__all__ = ["parse"]

_MARKER: Final = re.compile(
    r"^This is the (?:mail system at host|Postfix program at host)", re.M | re.I
)


def parse(mail: Mail) -> list[Found] | None:
    if not _MARKER.search(mail.text):
        return None
    return parse_text_report(mail)
