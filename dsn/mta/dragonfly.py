"""DragonFly Mail Agent (dma, ``mail.c``: ``bounce()``), the small MTA of DragonFly BSD and
some Linux systems.

One notice per failed recipient, from "MAILER-DAEMON <>" with the subject "Mail delivery
failed" and a ``Received: ... by host (DragonFly Mail Agent vX.Y)`` line of its own:

    This is the DragonFly Mail Agent v0.13 at host.example.net.

    There was an error delivering your mail to <user@example.org>.

    <reason>

    Original message follows.   (or "Message headers follow.")

The reason is dma's own words or the remote server's reply it quotes ("mx.example.org
[192.0.2.1] did not like our RCPT TO:" and the reply on the next line; "DNS lookup failure:
host example.org not found"; "Could not deliver for the last 432000 seconds. Giving up.").
dma bounces only once it has given up, so every notice is a failure.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import ADDRESS, normalise_address
from dsn.mail import Mail
from dsn.mta.base import Found, find_reply_code, find_status, section

__all__ = ["parse"]

_MARKER: Final = re.compile(r"^This is the DragonFly Mail Agent\b", re.M)
_RECIPIENT: Final = re.compile(
    rf"^There was an error delivering your mail to <{ADDRESS.pattern}>\.?[ \t]*$", re.M
)
_END: Final = re.compile(r"^(?:Original message follows|Message headers follow)\.", re.M)


def parse(mail: Mail) -> list[Found] | None:
    if not _MARKER.search(mail.text):
        return None
    match = _RECIPIENT.search(mail.text)
    if match is None:
        return None
    addr = normalise_address(match.group(1))
    if addr is None:
        return None
    reason = " ".join(section(mail.text[match.end() :], None, _END).split())
    return [
        Found(
            recipient=addr,
            diagnostic=reason,
            status=find_status(reason),
            reply_code=find_reply_code(reason),
            action="failed",
        )
    ]
