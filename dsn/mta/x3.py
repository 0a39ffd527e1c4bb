"""An unnamed legacy MTA (Sisimai's "X3"): From "Mail Delivery System", subject "Delivery
status notification" (in that case: Gmail writes "Delivery Status Notification"); "This is
an automatically generated Delivery Status Notification.", each failed recipient as
"  * addr", then, under "Technical details:", one line for all of them: "SMTP:RCPT host
192.0.2.8: 553 5.3.0 <addr>... No such user here", "Routing: Could not find a gateway for
addr" or "Diagnostic-Code: smtp; 552 5.2.2 Over quota"."""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, section
from dsn.mta.statuspart import Layout, read_records

__all__ = ["parse"]

_START: Final = re.compile(
    r"^[ \t]*This is an automatically generated Delivery Status Notification\.", re.M
)
_LAYOUT: Final = Layout(
    recipient=re.compile(r"^[ \t]+\*[ \t]+<?(?P<addr>[^<>\s]+@[^<>\s]+?)>?[ \t]*$"),
    detached=re.compile(r"^[ \t]*Technical details:"),
    skip=re.compile(r"^[ \t]*=+[ \t]*$"),
)


def parse(mail: Mail) -> list[Found] | None:
    if not mail.sender.lstrip('" ').startswith("mail delivery system"):
        return None
    if not mail.subject.startswith("Delivery status notification"):
        return None
    if not _START.search(mail.text):
        return None
    return read_records(mail, section(mail.text, _START, None), _LAYOUT)
