"""AOL's legacy notice, a plain text from ``...@aol.com``: "Your mail to the following
recipients could not be delivered because they are not accepting mail from ..." (or
"... could not be delivered") followed by the recipients one to a line, AOL members often
by screen name alone (a name without a domain is an ``aol.com`` address).  AOL's later
bounces carry a status part, which ``rfc3464`` reads."""

from __future__ import annotations

import re
from typing import Final

from dsn.address import normalise_address
from dsn.mail import Mail
from dsn.model import MAX_RECIPIENTS
from dsn.mta.base import Found, bounce_own_addresses, sharing_diagnostic
from dsn.mta.blocks import join_words

__all__ = ["parse"]

_SENDER: Final = re.compile(r"@(?:[\w-]+\.)*aol\.com\b")
_START: Final = re.compile(r"mail to the following recipients could not be delivered", re.I)
# A screen name or an address, alone on its line; never a word ending a sentence.
_NAME: Final = re.compile(r"^<?([\w+'-](?:[\w.+'-]*[\w+'-])?(?:@[\w-]+(?:\.[\w-]+)+)?)>?$")


def parse(mail: Mail) -> list[Found] | None:
    if not _SENDER.search(mail.sender):
        return None
    lines = mail.text.split("\n")
    index = next((i for i, line in enumerate(lines) if _START.search(line)), None)
    if index is None:
        return None
    statement = [lines[index]]
    names: list[str] = []
    for line in lines[index + 1 :]:
        word = line.strip()
        if not word:
            continue  # names may be separated by blank lines
        match = _NAME.match(word)
        if match is None:
            if names:
                break  # the list ends at the first line of prose (flufl.bounce reads it so)
            statement.append(word)  # the statement wrapped onto a second line
            continue
        addr = normalise_address(match.group(1) if "@" in word else f"{match.group(1)}@aol.com")
        if addr is not None and addr not in names and len(names) < MAX_RECIPIENTS:
            names.append(addr)
    own = bounce_own_addresses(mail)
    names = [n for n in names if n not in own]
    diagnostic = join_words(statement)
    return sharing_diagnostic(names, diagnostic, "failed") or None
