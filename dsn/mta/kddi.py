"""KDDI (au, ``dion.ne.jp`` / ``auone-net.jp``): a short text notice from
``no-reply@...`` — so it does not look like a bounce by its sender or subject ("Mail") —
with "Could not be delivered to: <addr>" and the reason on the next line ("As their
mailbox is full.", "Due to the following SMTP relay error", "As the remote domain doesnt
exist.")."""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, parse_text_report

__all__ = ["parse"]

_SENDER: Final = re.compile(r"[@.](?:dion\.ne\.jp|auone-net\.jp)\b")
_MARKER: Final = re.compile(r"^[ \t]*Could not be delivered to:[ \t]*<", re.M)


def parse(mail: Mail) -> list[Found] | None:
    if not _SENDER.search(mail.sender) and not _SENDER.search(mail.header("Reply-To")):
        return None
    if not _MARKER.search(mail.text):
        return None
    return parse_text_report(mail, action="failed")
