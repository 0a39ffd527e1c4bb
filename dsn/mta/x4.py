"""Unnamed qmail clones (Sisimai's "X4"): qmail's subject ("failure notice", "Permanent
Delivery Failure") or its ``Received: (qmail N invoked for bounce)``, and qmail's
"<addr>:" records with the remote server's words below, but openings of their own ("This
is the mail delivery agent at", "Unfortunately, your mail was not delivered to the
following address:", "Su mensaje no pudo ser entregado", ...).  A message ``qmail`` claims
(qmail-send's own opening, Yahoo!'s) is left to it."""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta import qmail
from dsn.mta.base import Found, section
from dsn.mta.statuspart import Layout, read_records

__all__ = ["parse"]

_QMAIL_RECEIVED: Final = re.compile(r"\(qmail \d+ invoked (?:for bounce|from network)\)")
_START: Final = re.compile(
    r"(?:He/Her is not |unable to deliver your message to the following addresses"
    r"|Su mensaje no pudo ser entregado|This is the machine generated message from mail service"
    r"|This is the mail delivery agent at|Unable to deliver message to the following address"
    r"|Unfortunately, your mail was not delivered to the following address:"
    r"|Your mail message to the following address|Your message to the following addresses"
    r"|We're sorry\.)"
)
_END: Final = re.compile(
    r"^-{3}[ \t]*Below this line is a copy of the message|Original message follows\.", re.M
)
_LAYOUT: Final = Layout(recipient=re.compile(r"^<(?P<addr>[^<>\s]+@[^<>\s]+)>:"))


def parse(mail: Mail) -> list[Found] | None:
    if not (
        mail.subject.startswith(("failure notice", "Permanent Delivery Failure"))
        or any(_QMAIL_RECEIVED.search(str(v)) for v in mail.message.get_all("Received") or [])
    ):
        return None
    if not _START.search(mail.text) or qmail.parse(mail):
        return None
    return read_records(mail, section(mail.text, _START, _END), _LAYOUT)
