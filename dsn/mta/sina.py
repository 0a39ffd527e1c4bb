"""Sina Mail (``sina.com``, ``sina.cn``, ``vip.sina.com``): a multipart notice from
``mailer-daemon@sina.com`` whose first text part names each failed recipient at the start
of a line in angle brackets, ``<addr>`` or ``<addr>: reply``, with the remote reply on that
line or the lines after it (flufl.bounce reads the same lines)."""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, bounce_own_addresses
from dsn.mta.blocks import read_blocks

__all__ = ["parse"]

_SENDER: Final = re.compile(r"\bmailer-daemon@(?:vip\.)?sina\.(?:com|cn|net)\b")
_RECIPIENT: Final = re.compile(r"^<(?P<addr>[^\s<>@]+@[^\s<>]+)>[ \t]*:?(?P<rest>.*)$")
_END: Final = re.compile(
    r"^[ \t\-=]*(?:original message|below this line|returned message|message headers)", re.I
)


def parse(mail: Mail) -> list[Found] | None:
    if not _SENDER.search(mail.sender):
        return None
    own = bounce_own_addresses(mail)
    found = [
        entry
        for entry in read_blocks(mail.text, _RECIPIENT, end=_END)
        if entry.recipient not in own
    ]
    return found or None
