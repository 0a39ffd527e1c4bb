"""Mimecast's own notice (subject "Email Delivery Failure", Message-ID at
``.mimecast.lan``): every statement on a line of its own after "-- ": the address ("-- addr"),
then "The problem appears to be :" / "-- reason" and "Additional information follows :" /
"-- 5.4.1 Recipient address rejected ...".

Placed after ``rfc3464``: where Mimecast attaches a status part, it carries the same address
and reply, so nothing is lost by letting the status part speak; this parser reads the notice
that has none.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found
from dsn.mta.statuspart import Layout, read_records

__all__ = ["parse"]

_LAYOUT: Final = Layout(
    recipient=re.compile(r"^--[ \t]+<?(?P<addr>[^<>\s]+@[^<>\s]+?)>?[ \t]*$"),
    reason=re.compile(r"^--[ \t]+(?P<why>\S.*)$"),
    continued=False,
)


def parse(mail: Mail) -> list[Found] | None:
    if "Email Delivery Failure" not in mail.subject and not mail.header("Message-ID").endswith(
        ".mimecast.lan>"
    ):
        return None
    return read_records(mail, mail.text, _LAYOUT)
