"""Trend Micro InterScan Messaging Security (IMSS, IMSVA; From "InterScan MSS" or
"InterScan Notification", or its subjects "Mail could not be delivered" and their Japanese
forms) and its cloud successor (Trend Vision One email security).

The report is the SMTP exchange that failed: "Sent <<< RCPT TO:<addr>" and the reply,
"Received >>> 550 5.1.1 <addr>... user unknown".  The Japanese notices reverse the arrows
(">>> RCPT TO:<addr>" is the command, "<<< 550 ..." the reply), so a reply is recognised by
its reply code, not by the arrow.  The cloud service writes "Unable to deliver message to
<addr>" with no reply at all.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import normalise_address
from dsn.mail import Mail
from dsn.model import MAX_RECIPIENTS
from dsn.mta.base import Found, delay_action, find_reply_code, find_status

__all__ = ["parse"]

_SUBJECTS: Final = frozenset(
    {"Mail could not be delivered", "メッセージを配信できません。", "メール配信に失敗しました"}
)
_EXCHANGE: Final = re.compile(r"(?:<<<|>>>)[ \t]+(?P<said>.*)$")
_REPLY: Final = re.compile(r"^[245]\d\d\b")
_UNABLE: Final = re.compile(r"Unable to deliver (?:the )?message to")
_ANGLE: Final = re.compile(r"<([^<>\s]+@[^<>\s]+)>")


def parse(mail: Mail) -> list[Found] | None:
    sender = mail.sender.lstrip()
    if not (
        sender.startswith(('"interscan mss"', '"interscan notification"'))
        or mail.subject in _SUBJECTS
    ):
        return None
    found: dict[str, Found] = {}
    current: Found | None = None
    for line in mail.text.split("\n"):
        exchange = _EXCHANGE.search(line)
        unable = _UNABLE.search(line) if exchange is None else None
        if exchange is None and unable is None:
            continue
        angle = _ANGLE.search(line)
        addr = normalise_address(angle.group(1)) if angle else None
        if addr is not None and len(found) < MAX_RECIPIENTS:
            current = found.setdefault(addr, Found(recipient=addr))
        if current is None:
            continue
        if unable is not None:
            current.diagnostic = current.diagnostic or line.strip()
        elif exchange is not None and _REPLY.match(exchange.group("said")):
            current.diagnostic = exchange.group("said").strip()
    for entry in found.values():
        entry.status = find_status(entry.diagnostic)
        entry.reply_code = find_reply_code(entry.diagnostic)
        entry.action = delay_action(mail, entry.diagnostic)
    return list(found.values()) or None
