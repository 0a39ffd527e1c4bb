"""MailMarshal: the reason first ("Could not be delivered because of ... 550 5.1.1 User
unknown"), then "The following recipients were affected:" and one address per line."""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, find_reply_code, find_status, scan_text, section

__all__ = ["parse"]

_REASON: Final = re.compile(r"^Could not be delivered because of[ \t]*$", re.M | re.I)
_AFFECTED: Final = re.compile(r"^The following recipients were affected:?[ \t]*$", re.M | re.I)
_END: Final = re.compile(r"^Additional Information", re.M | re.I)


def parse(mail: Mail) -> list[Found] | None:
    if not _AFFECTED.search(mail.text):
        return None
    reason = " ".join(section(mail.text, _REASON, _AFFECTED).split())
    found = scan_text(section(mail.text, _AFFECTED, _END))
    for entry in found:
        entry.diagnostic = reason or entry.diagnostic
        entry.status = find_status(entry.diagnostic)
        entry.reply_code = find_reply_code(entry.diagnostic)
        entry.action = "failed"
    return found or None
