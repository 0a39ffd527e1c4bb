"""An unnamed legacy MTA (Sisimai's "X1"): subject "Returned Mail: ..." or "Mail Delivery
Failure", or From "Mail Delivery System"; "The original message was received at <date>",
then one line per failed recipient with the reason in brackets: "addr [User unknown]".

Its heading ("---The following addresses had delivery errors---") would satisfy sendmail's
marker, so it is tried before ``sendmail``; the bracketed reason is its own.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, section
from dsn.mta.statuspart import Layout, read_records

__all__ = ["parse"]

_START: Final = re.compile(r"^The original message was received at ", re.M)
_END: Final = re.compile(r"^Content-Type: message/rfc822|^Received: from ", re.M | re.I)
_LAYOUT: Final = Layout(
    recipient=re.compile(
        r"^<?(?P<addr>[^<>\s\[]+@[^<>\s\[]+?)>?[ \t]+\[(?P<why>[^\]\n]*)\][ \t]*$"
    ),
)
_FROM: Final = re.compile(r'^"?mail deliver\w* system"?[ \t]', re.I)


def parse(mail: Mail) -> list[Found] | None:
    if not (
        mail.subject.startswith(("Returned Mail: ", "Mail Delivery Failure"))
        or _FROM.match(mail.sender)
    ):
        return None
    if not _START.search(mail.text):
        return None
    text = section(mail.text, _START, _END)
    if "@" not in text or " [" not in text:
        return None
    return read_records(mail, text, _LAYOUT, action="failed")
