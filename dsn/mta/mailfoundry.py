"""MailFoundry (subject "Message delivery has failed", a ``Received`` header naming
"(MAILFOUNDRY) id"): "Unable to deliver message to: <addr>", then "Delivery failed for the
following reason:" and the remote server's reply ("Server mx.example.org[192.0.2.22] failed
with: 550 ...")."""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found
from dsn.mta.statuspart import Layout, read_records

__all__ = ["parse"]

_LAYOUT: Final = Layout(
    recipient=re.compile(
        r"^Unable to deliver message to:[ \t]*<?(?P<addr>[^<>\s]+@[^<>\s]+?)>?[ \t]*$"
    ),
    reason=re.compile(r"^Delivery failed for the following reason:[ \t]*(?P<why>.*)$"),
)


def parse(mail: Mail) -> list[Found] | None:
    if mail.subject != "Message delivery has failed":
        return None
    received = mail.message.get_all("Received") or []
    if not any("(MAILFOUNDRY) id" in str(value) for value in received):
        return None
    return read_records(mail, mail.text, _LAYOUT)
