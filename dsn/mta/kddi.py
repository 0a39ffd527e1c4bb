"""KDDI (au, ``dion.ne.jp`` / ``auone-net.jp`` / ``au.com``): a short text notice from
``no-reply@...`` — so it does not look like a bounce by its sender or subject ("Mail") —
with "Could not be delivered to: <addr>" and the reason on the next line ("As their
mailbox is full.", "Due to the following SMTP relay error", "As the remote domain doesnt
exist.").  The opening line is "Your mail sent on: <date>" or, for a message KDDI tried
for a while, "Your mail attempted to be delivered on: <date>".

The sender is not always KDDI's own address (a relay rewrites it, or the notice comes from
the au.com or EZweb hosts): a ``Received`` line written by an EZweb or au.com host claims
the notice as well, but only with the template's own opening and recipient lines.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, parse_text_report

__all__ = ["parse"]

_SENDER: Final = re.compile(r"[@.](?:dion\.ne\.jp|auone-net\.jp)\b")
_RECEIVED: Final = re.compile(r"ezweb\.ne\.jp \(|\.au\.com \(|\.auone-net\.jp \(")
_MARKER: Final = re.compile(r"^[ \t]*Could not be delivered to:[ \t]*<", re.M)
_OPENING: Final = re.compile(
    r"^[ \t]*Your mail (?:sent on|attempted to be delivered on):", re.M | re.I
)


def _is_kddi(mail: Mail) -> bool:
    if _SENDER.search(mail.sender) or _SENDER.search(mail.header("Reply-To")):
        return True
    received = mail.message.get_all("Received") or []
    return any(_RECEIVED.search(str(line)) for line in received) and (
        _OPENING.search(mail.text) is not None
    )


def parse(mail: Mail) -> list[Found] | None:
    if not _is_kddi(mail) or not _MARKER.search(mail.text):
        return None
    return parse_text_report(mail, start=None, action="failed")
