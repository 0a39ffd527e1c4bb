"""CommuniGate Pro: one block per failed recipient, "Failed to deliver to '<addr>'", then
the module that failed and what it reports, to a blank line:

    Failed to deliver to '<user@example.org>'
    SMTP module(domain example.org) reports:
     host mx.example.org says:
     550 5.1.1 User unknown

    Failed to deliver to '<user@example.net>'
    LOCAL module(account user) reports:
     account is full (quota exceeded)

The "module(...) reports:" line is CommuniGate's own; a block is read only with it.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import ADDRESS
from dsn.mail import Mail
from dsn.mta.base import Found, read_headed_blocks

__all__ = ["parse"]

_HEAD: Final = re.compile(rf"^[ \t]*Failed to deliver to '<?{ADDRESS.pattern}>?'")
_MODULE: Final = re.compile(r"^[ \t]*[A-Z]+ module\([^)\n]*\) reports:", re.M)


def parse(mail: Mail) -> list[Found] | None:
    if "Failed to deliver to '" not in mail.text or not _MODULE.search(mail.text):
        return None
    return read_headed_blocks(mail, _HEAD, "Failed to deliver") or None
