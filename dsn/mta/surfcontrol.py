"""Websense SurfControl E-mail Filter (``X-Mailer: SurfControl E-mail Filter`` with
``X-SEF-Processed``): "Your message could not be sent.", then per recipient an
"Addressed To: addr" line, the date of the attempt, and the transcript of the failure
("addr: [192.0.2.5], 550 addr... No such user") to "--- Message non-deliverable."."""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, section
from dsn.mta.statuspart import Layout, read_records

__all__ = ["parse"]

_START: Final = re.compile(r"^Your message could not be sent\.", re.M)
_LAYOUT: Final = Layout(
    recipient=re.compile(r"^Addressed To:[ \t]*<?(?P<addr>[^<>\s]+@[^<>\s]+?)>?[ \t]*$"),
    # The attempt's date and the closing verdict say nothing about the recipient.
    skip=re.compile(r"^(?:Sun|Mon|Tue|Wed|Thu|Fri|Sat)\b|^---[ \t]*Message non-deliverable"),
)


def parse(mail: Mail) -> list[Found] | None:
    if str(mail.message.get("X-Mailer", "")).strip() != "SurfControl E-mail Filter":
        return None
    if mail.message.get("X-SEF-Processed") is None or not _START.search(mail.text):
        return None
    return read_records(mail, section(mail.text, _START, None), _LAYOUT)
