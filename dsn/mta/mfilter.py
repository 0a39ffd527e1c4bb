"""Digital Arts m-FILTER (``X-Mailer: m-FILTER``, subject "failure notice"): a Japanese
notice, then each failed address on a line of its own, the remote server's reply under
"-------server message" and the SMTP command under "-------SMTP command", the original
after "-------original message"."""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, section
from dsn.mta.statuspart import Layout, read_records

__all__ = ["parse"]

_END: Final = re.compile(r"^-{7}original (?:message|mail info)", re.M)
_LAYOUT: Final = Layout(
    recipient=re.compile(r"^[ \t]*<?(?P<addr>[^<>\s@]+@[^<>\s@]+?)>?[ \t]*$"),
    detached=re.compile(r"^-{7}server message"),
    # The command heading and its command are not the server's words.
    skip=re.compile(r"^-{7}"),
)


def parse(mail: Mail) -> list[Found] | None:
    if str(mail.message.get("X-Mailer", "")).strip() != "m-FILTER":
        return None
    if "-------server message" not in mail.text:
        return None
    return read_records(mail, section(mail.text, None, _END), _LAYOUT, action="failed")
