"""qmail-send (and Yahoo!, which uses its format): one ``<addr>:`` line per failed
recipient followed by the remote server's words, ending at
"--- Below this line is a copy of the message."."""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, parse_text_report

__all__ = ["parse"]

_MARKER: Final = re.compile(
    r"^Hi\. This is the qmail|qmail-send program|^Sorry, we were unable to deliver your message"
    r"|^I'm afraid I wasn't able to deliver your message",
    re.M | re.I,
)


def parse(mail: Mail) -> list[Found] | None:
    if not _MARKER.search(mail.text):
        return None
    return parse_text_report(mail)
