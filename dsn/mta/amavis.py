"""amavis (amavisd-new), the content filter (From "Content-filter at <host>").

Its non-delivery report is a standard DSN: either the next hop's refusal passed on
("550 5.1.1 ... User unknown") or its own verdict on the *message* ("554 5.7.0 Reject,
id=... - INFECTED: ...", "BANNED", "SPAM"), which is about content, not the address.  Its
older sender notices ("VIRUS (...) IN MAIL FROM YOU", "Our content checker found virus
...") have no status part and name the recipients as "-> addr": they are read here as the
content verdict they are (the rules class virus and banned content as policy), where the
text scanner would guess.  A notice saying the message went through ("WAS SUCCESSFULLY
RELAYED") reports deliveries, which suppress no one.

Tried before ``rfc3464`` only to name the filter: a status part is read by ``rfc3464``'s
parser unchanged.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta import rfc3464
from dsn.mta.base import Found
from dsn.mta.statuspart import Layout, read_records

__all__ = ["parse"]

_SENDER: Final = re.compile(r'^"?content-filter at ', re.I)
_VERDICT: Final = re.compile(
    r"(?:content checker|we) (?:found|detected)|INFECTED|BANNED|virus|banned|spam", re.I
)
_PASSED: Final = re.compile(r"WAS SUCCESSFULLY RELAYED|has been delivered|was delivered", re.I)
_LAYOUT: Final = Layout(
    # "-> addr" or an indented "<addr>": only the recipient lines; the verdict is the whole
    # notice's.
    recipient=re.compile(r"^[ \t]*(?:->[ \t]*<?|[ \t]<)(?P<addr>[^<>\s]+@[^<>\s]+?)>?[ \t]*$"),
)


def parse(mail: Mail) -> list[Found] | None:
    if not _SENDER.match(mail.sender):
        return None
    if mail.status_texts:
        return rfc3464.parse(mail)
    verdict = " ".join(line.strip() for line in mail.text.split("\n") if _VERDICT.search(line))
    if not verdict:
        return None
    found = read_records(mail, mail.text, _LAYOUT)
    if not found:
        return None
    action = "delivered" if _PASSED.search(mail.text) else "failed"
    for entry in found:
        entry.diagnostic = verdict
        entry.action = action
    return found
