"""fml, the mailing list manager (fml.org): its replies to a post the list refused.

Sent from the list's ``<list>-admin@`` address with an ``X-MLServer: fml ...`` header and a
Message-ID ending in ``.FML...``; the text names the list the post was refused by, in angle
brackets ("You are not a member of this mailing list <list@example.org>.", "NOT MEMBER
article from ...", "reject mail from ...", "Duplicated Message-ID"), and the post follows
"Original mail as follows:".  The refused "recipient" is that list address: a rejection of
the post by the list's rules, never a statement about a mailbox.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import ADDRESS, normalise_address
from dsn.mail import Mail
from dsn.mta.base import Found, bounce_own_addresses, section

__all__ = ["parse"]

_END: Final = re.compile(r"^[ \t]*Original mail as follows:", re.M)
_NAMED: Final = re.compile(rf"<{ADDRESS.pattern}>")


def parse(mail: Mail) -> list[Found] | None:
    if not mail.header("X-MLServer").lower().startswith("fml"):
        return None
    if "-admin@" not in mail.sender and ".FML" not in mail.header("Message-ID"):
        return None
    own = bounce_own_addresses(mail)
    found: dict[str, Found] = {}
    lines: list[str] = []
    for line in section(mail.text, None, _END).split("\n"):
        stripped = line.strip()
        if not stripped:
            continue
        lines.append(stripped)
        for match in _NAMED.finditer(stripped):
            addr = normalise_address(match.group(1))
            if addr is not None and addr not in own and addr not in found:
                found[addr] = Found(recipient=addr, diagnostic=stripped, action="failed")
    if len(found) == 1:
        # The explanation often runs over the lines around the address.
        only = next(iter(found.values()))
        only.diagnostic = " ".join(lines[:6])
    return list(found.values()) or None
