"""McAfee SaaS Email Protection, formerly MX Logic (``X-MX-Bounce``, ``X-MXL-Hash`` or
``X-MXL-NoteHash`` headers): Exim's text ("This message was created automatically by mail
delivery software.") with each failed recipient as "  <addr>: 550 5.1.1 ..." on one line.
Tried before ``exim``, which would read the same text but not name the service."""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, parse_text_report, with_failed_recipients_header

__all__ = ["parse"]

_HEADERS: Final = ("X-MX-Bounce", "X-MXL-Hash", "X-MXL-NoteHash")
_START: Final = re.compile(r"^This message was created automatically by mail delivery", re.M)
_END: Final = re.compile(r"^Included is a copy of the message header|^-{2,}.*copy of", re.M | re.I)


def parse(mail: Mail) -> list[Found] | None:
    if all(mail.message.get(name) is None for name in _HEADERS):
        return None
    if not _START.search(mail.text):
        return None
    return with_failed_recipients_header(mail, parse_text_report(mail, start=_START, end=_END))
