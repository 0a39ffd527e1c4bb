"""An unnamed MTA (Sisimai's "X6"): subject "There was an error sending your mail", "We had
trouble delivering your message. Full details follow:", then per recipient "SMTP Server
<mx> rejected recipient <addr> (Error following RCPT command). It responded as follows:
[550 5.1.1 User unknown]" (often wrapped), or "The following recipients returned permanent
errors: addr.", to "The attachment contains the original mail headers"."""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, section
from dsn.mta.statuspart import Layout, read_records

__all__ = ["parse"]

_START: Final = re.compile(r"^We had trouble delivering your message\. Full details follow:", re.M)
_END: Final = re.compile(r"^The attachment contains the original mail headers", re.M)
_LAYOUT: Final = Layout(
    # The whole line is the explanation: the address sits inside it.
    recipient=re.compile(
        r"^(?P<why>(?:SMTP Server <[^<>\n]*> rejected recipient"
        r"|The following recipients returned permanent errors:)"
        r"[ \t]*<?(?P<addr>[^<>\s]+@[^<>\s]+?)>?\.?(?:[ \t].*)?)$"
    ),
)


def parse(mail: Mail) -> list[Found] | None:
    if not mail.subject.startswith("There was an error sending your mail"):
        return None
    if not _START.search(mail.text):
        return None
    return read_records(mail, section(mail.text, _START, _END), _LAYOUT)
