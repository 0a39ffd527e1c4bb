"""amavis (amavisd-new), the content filter (From "Content-filter at <host>"): its
non-delivery report is a standard DSN ("554 5.7.0 Reject, id=... - INFECTED: ...",
"BANNED", "SPAM") about the *message*, not about the recipient's address; its older
sender notices ("VIRUS (...) IN MAIL FROM YOU", "Our content checker found virus ...")
have no status part and name the recipients as "-> addr".

Tried before ``rfc3464``, whose reader it uses, so that a notice without a status part is
claimed here and read as what it is (a content verdict, which the rules class as policy)
rather than by the text scanner.  A notice saying the message went through ("WAS
SUCCESSFULLY RELAYED", "delivered") reports deliveries, which suppress no one.
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
