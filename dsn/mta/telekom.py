"""Deutsche Telekom / T-Online (``Mailer-Daemon@t-online.de``) and Smail 3, whose banner
layout Telekom's mailers keep (smail ``src/notify.c``):

    |------------------------- Message log follows: -------------------------|
    no valid recipients were found for this message
    |------------------------- Failed addresses follow: ---------------------|
     <user@example.de>
       552 5.2.2 <user@example.de> Quota exceeded (mailbox for user is full)
    |------------------------- Message text follows: ------------------------|

Telekom puts the address alone in angle brackets with the reply on the next line; Smail
writes `` addr ... failed: reason`` on one line.  The message log, when there is one,
explains every recipient; Telekom's German or English introduction before it is not read.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found
from dsn.mta.blocks import read_blocks

__all__ = ["parse"]

_BANNER: Final = r"^\|-+ {0}[ \t]*-+\|"
_FAILED: Final = re.compile(_BANNER.format("Failed addresses follow:"), re.M)
_LOG: Final = re.compile(_BANNER.format("Message log follows:"), re.M)
_END: Final = re.compile(_BANNER.format("Message (?:text|header) follows:"))
_ANY_BANNER: Final = re.compile(_BANNER.format(r"[\w ]+follows?:"))
_RECIPIENT: Final = re.compile(
    r"^[ \t]*<?(?P<addr>[^\s<>@]+@[^\s<>]+?)>?(?:[ \t]*$|[ \t]+\.\.\.[ \t]*(?P<rest>.*)$)"
)


def parse(mail: Mail) -> list[Found] | None:
    failed = _FAILED.search(mail.text)
    if failed is None:
        return None
    # Read from the log when there is one, so that its lines explain every recipient.
    log = _LOG.search(mail.text, 0, failed.start())
    body = mail.text[(log or failed).start() :]
    found = read_blocks(body, _RECIPIENT, end=_END, skip=_ANY_BANNER)
    return found or None
