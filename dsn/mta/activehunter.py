"""TransWARE Active!hunter (``X-AHMailID`` header): sendmail's layout with the recipient
written twice (">>> addr <addr>") under "----- The following addresses had permanent
fatal errors -----", and the remote server's reply under "----- Transcript of session
follows -----" (one transcript for every recipient)."""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, section
from dsn.mta.statuspart import Layout, read_records

__all__ = ["parse"]

_START: Final = re.compile(
    r"^[ \t]*-+[ \t]*The following addresses had permanent fatal errors", re.M
)
_END: Final = re.compile(r"^Content-type: message/rfc822", re.M | re.I)
_LAYOUT: Final = Layout(
    recipient=re.compile(r"^>>>[ \t]+.*<(?P<addr>[^<>\s]+@[^<>\s]+)>[ \t]*$"),
    detached=re.compile(r"^[ \t]*-+[ \t]*Transcript of session follows"),
)


def parse(mail: Mail) -> list[Found] | None:
    if mail.message.get("X-AHMailID") is None or not _START.search(mail.text):
        return None
    return read_records(mail, section(mail.text, _START, _END), _LAYOUT, action="failed")
