"""Microsoft's SMTP service (IIS ``SMTPSVC``) without a status part: "The email below could
not be delivered to the following user:", the recipient (``"name" <addr>`` or ``<addr>``),
then "Old message:" and the returned original.  Its RFC 3464 reports ("Delivery to the
following recipients failed.") are read by ``rfc3464``.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import ADDRESS, normalise_address
from dsn.mail import Mail
from dsn.model import MAX_RECIPIENTS
from dsn.mta.base import Found, bounce_own_addresses, delay_action, section

__all__ = ["parse"]

_START: Final = re.compile(
    r"^[ \t]*The email below could not be delivered to the following users?:", re.M | re.I
)
_END: Final = re.compile(r"^[ \t]*Old message:", re.M | re.I)
_NAMED: Final = re.compile(rf"<{ADDRESS.pattern}>|^[ \t]*{ADDRESS.pattern}[ \t]*$")


def parse(mail: Mail) -> list[Found] | None:
    match = _START.search(mail.text)
    if match is None:
        return None
    own = bounce_own_addresses(mail)
    block = section(mail.text[match.start() :], _START, _END)
    recipients: list[str] = []
    words: list[str] = [" ".join(match.group(0).split())]
    for line in block.split("\n"):
        named = _NAMED.search(line)
        addr = normalise_address(named.group(1) or named.group(2)) if named else None
        if addr is not None and addr not in own:
            if addr not in recipients and len(recipients) < MAX_RECIPIENTS:
                recipients.append(addr)
        elif line.strip() and len(words) < 12:
            words.append(line.strip())
    diagnostic = " ".join(words)
    return [
        Found(recipient=addr, diagnostic=diagnostic, action=delay_action(mail, diagnostic))
        for addr in recipients
    ] or None
