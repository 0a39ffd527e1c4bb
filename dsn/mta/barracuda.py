"""Barracuda Email Security Gateway (subject "**Message you sent blocked by our bulk email
filter**"): "Your message to: addr" and the appliance's verdict in prose, then the
status fields, as a status part or pasted into the text.

Tried before ``rfc3464``: the status fields are read with its reader all the same; the
verdict ("was blocked by our Spam Firewall") completes a bare Diagnostic-Code.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta import rfc3464
from dsn.mta.base import Found, section
from dsn.mta.statuspart import Layout, read_records

__all__ = ["parse"]

_START: Final = re.compile(r"^Your message to:", re.M)
_END: Final = re.compile(
    r"^(?:Reporting-MTA|Final-Recipient|Original-Recipient)[ \t]*:", re.M | re.I
)
_SENTENCE: Final = re.compile(r"(?<=\.)[ \t]")
_LAYOUT: Final = Layout(
    recipient=re.compile(r"^Your message to:[ \t]*<?(?P<addr>[^<>\s]+@[^<>\s]+?)>?[ \t]*$"),
)


def parse(mail: Mail) -> list[Found] | None:
    if "our bulk email filter" not in mail.subject:
        return None
    start = _START.search(mail.text)
    if start is None:
        return None
    text = mail.text[start.start() :]
    prose = read_records(mail, section(text, None, _END), _LAYOUT, action="failed") or []
    found = rfc3464.parse(mail) if mail.status_texts else None
    if not found:
        return prose or None
    # Its first sentence: the rest quotes the subject.
    verdicts = {entry.recipient: _SENTENCE.split(entry.diagnostic, 1)[0] for entry in prose}
    for entry in found:
        verdict = verdicts.get(entry.recipient, "")
        if verdict and verdict not in entry.diagnostic:
            entry.diagnostic = f"{entry.diagnostic} {verdict}".strip()
    return found
