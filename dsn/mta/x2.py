"""An unnamed legacy MTA (Sisimai's "X2"): from MAILER-DAEMON, or subject "Delivery
failure", "failure delivery", "failed delivery"; "Unable to deliver message to the
following address(es).", then "<addr>:" and the reason on the lines below ("This user
doesn't have a example.com account (addr) [0]"), to "--- Original message follows."."""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, section
from dsn.mta.statuspart import Layout, read_records

__all__ = ["parse"]

_START: Final = re.compile(r"^Unable to deliver message to the following address", re.M)
_END: Final = re.compile(r"^-{3}[ \t]*Original message follows", re.M | re.I)
_LAYOUT: Final = Layout(recipient=re.compile(r"^<(?P<addr>[^<>\s]+@[^<>\s]+)>:[ \t]*$"))


def parse(mail: Mail) -> list[Found] | None:
    if "mailer-daemon@" not in mail.sender and not mail.subject.startswith(
        ("Delivery failure", "failure delivery", "failed delivery")
    ):
        return None
    if not _START.search(mail.text):
        return None
    return read_records(mail, section(mail.text, _START, _END), _LAYOUT)
