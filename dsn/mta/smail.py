"""Smail 3 (``src/notify.c``) and the mailers that kept its banners (T-Online's, among
others): the report is cut into sections by banner lines

    |------------------------- Message log follows: -------------------------|
    |------------------------- Failed addresses follow: ---------------------|
    |------------------------- Message text follows: ------------------------|

Under "Failed addresses follow:" each failed address has a line of its own (`` <addr>`` or
`` addr ... reason``), the reason on the same line or indented below it ("552 5.2.2 ...
Quota exceeded").  A recipient without a reason of its own takes the message log's lines
that name it, else the whole log when it is the only recipient.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, find_reply_code, find_status, section
from dsn.mta.statuspart import Layout, read_records

__all__ = ["parse"]

_FAILED: Final = re.compile(r"^\|?[ \t]*-{5,}[ \t]*Failed addresses follow:", re.M | re.I)
_LOG: Final = re.compile(r"^\|?[ \t]*-{5,}[ \t]*Message log follows:", re.M | re.I)
_BANNER: Final = re.compile(r"^\|?[ \t]*-{5,}[ \t]*\w[\w ]*follows?:", re.M | re.I)
_LAYOUT: Final = Layout(
    recipient=re.compile(
        r"^[ \t]*<?(?P<addr>[^<>\s]+@[^<>\s.]+(?:\.[^<>\s.]+)+)>?"
        r"(?:[ \t]+\.{3}[ \t]*(?P<why>\S.*?))?[ \t]*$"
    ),
)
_LOG_LINES: Final = 12


def parse(mail: Mail) -> list[Found] | None:
    if not _FAILED.search(mail.text):
        return None
    found = read_records(mail, section(mail.text, _FAILED, _BANNER), _LAYOUT)
    if not found:
        return None
    log = (
        [line.strip() for line in section(mail.text, _LOG, _BANNER).split("\n") if line.strip()][
            :_LOG_LINES
        ]
        if _LOG.search(mail.text)
        else []
    )
    for entry in found:
        if entry.diagnostic:
            continue
        own = [line for line in log if entry.recipient in line.lower()]
        words = " ".join(own or (log if len(found) == 1 else []))
        entry.diagnostic = words
        entry.status = find_status(words)
        entry.reply_code = find_reply_code(words)
    return found
