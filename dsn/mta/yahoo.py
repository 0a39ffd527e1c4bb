"""Yahoo! Mail's legacy notice (the qmail-derived template of its own MTA): "Sorry, we were
unable to deliver your message to the following address." (or "Unable to deliver message
to the following address(es)." after "Message from yahoo.com."), then ``<addr>:`` and
"Remote host said: 550 5.1.1 ... [RCPT_TO]" — the reply sometimes on the line after
"Remote host said:" — ending at "--- Below this line is a copy of the message." or "---
Original message follows.".

Claimed by Yahoo!'s own marks (``X-YMailISG``, a ``yahoo`` MAILER-DAEMON), so that the same
words written by another qmail stay ``qmail``'s.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found
from dsn.mta.blocks import read_blocks

__all__ = ["parse"]

_SENDER: Final = re.compile(r"\bmailer-daemon@(?:[\w-]+\.)*yahoo(?:[\w-]*)\.[a-z.]+", re.I)
_START: Final = re.compile(
    r"^[ \t]*(?:Sorry, we were unable to deliver your message"
    r"|Unable to deliver message to the following address|Message from yahoo\.)",
    re.I,
)
_RECIPIENT: Final = re.compile(r"^[ \t]*<(?P<addr>[^\s<>@]+@[^\s<>]+)>:(?P<rest>.*)$")
_END: Final = re.compile(r"^[ \t]*(?:-{3}|=+) *(?:Below this line|Original message)", re.I)


def parse(mail: Mail) -> list[Found] | None:
    if mail.message.get("X-YMailISG") is None and not _SENDER.search(mail.sender):
        return None
    found = read_blocks(mail.text, _RECIPIENT, start=_START, end=_END)
    return found or None
