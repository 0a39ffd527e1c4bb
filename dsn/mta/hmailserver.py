"""hMailServer (Windows): the server message ``SEND_FAILED_NOTIFICATION``.

"Your message did not reach some or all of the intended recipients." (Exchange's opening
too), "Sent:" and "Subject:" of the original, "The following recipient(s) could not be
reached:" (Exchange says "cannot be reached"), then one record per recipient written by
``SMTPClientConnection``: the address, then indented "Error Type: SMTP", "Remote server
(192.0.2.1) issued an error.", "hMailServer sent: RCPT TO:<addr>", "Remote server replied:
550 ..." (or "Connection to recipients server failed." and "Error: ..."), and the signature
line "hMailServer".  The administrator may reword or translate the template; the record
lines ("Error Type: SMTP" followed by "Remote server (...)" or "Connection to recipients
server failed."), which the server writes itself, identify it then.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, section
from dsn.mta.statuspart import Layout, read_records

__all__ = ["parse"]

_START: Final = re.compile(r"^[ \t]*The following recipient\(s\) could not be reached:", re.M)
_OWN: Final = re.compile(
    r"^[ \t]*(?:Error Type: SMTP|hMailServer sent:|Remote server replied:)|^hMailServer[ \t]*$",
    re.M,
)
_END: Final = re.compile(r"^hMailServer[ \t]*$", re.M)
_LAYOUT: Final = Layout(
    recipient=re.compile(r"^[ \t]*<?(?P<addr>[^<>\s:]+@[^<>\s]+?)>?:?[ \t]*$"),
    skip=re.compile(r"^[ \t]*Error Type:", re.I),
)


# The record lines alone, when the administrator translated the template around them.
_RECORD: Final = re.compile(
    r"^[ \t]*Error Type: SMTP[ \t]*\n[ \t]*(?:Remote server \(|Connection to recipients server)",
    re.M,
)


def parse(mail: Mail) -> list[Found] | None:
    if _START.search(mail.text) and _OWN.search(mail.text):
        return read_records(mail, section(mail.text, _START, _END), _LAYOUT)
    if _RECORD.search(mail.text):
        return read_records(mail, section(mail.text, None, _END), _LAYOUT)
    return None
