"""SmarterMail (SmarterTools): "Could not deliver message to the following recipient(s):",
then a record per recipient, "Failed Recipient: addr" and "Reason: ..." (the remote
server's reply, "Remote host said: 550 ...", or SmarterMail's own words, "The mailbox is
full", "Failed to connect to the recipients mail server. No MX records were found ...")."""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, section
from dsn.mta.statuspart import Layout, read_records

__all__ = ["parse"]

_START: Final = re.compile(r"^[ \t]*Could not deliver message to the following recipient", re.M)
_LAYOUT: Final = Layout(
    recipient=re.compile(r"^[ \t]*Failed Recipient:[ \t]*<?(?P<addr>[^<>\s]+@[^<>\s]+?)>?[ \t]*$"),
    reason=re.compile(r"^[ \t]*Reason:[ \t]*(?P<why>.*)$"),
)


def parse(mail: Mail) -> list[Found] | None:
    if "Failed Recipient:" not in mail.text or not _START.search(mail.text):
        return None
    return read_records(mail, section(mail.text, _START, None), _LAYOUT)
