"""McAfee Email Gateway / Email and Web Security appliance (``X-NAI-Header: Modified by
McAfee ...``, subject "Delivery Status"): "--- The following addresses had delivery
problems ---", one "<addr>   (reason)" line per recipient, and a status part that often has
no Diagnostic-Code.

Tried before ``rfc3464``: the status part is read with its reader, and the appliance's own
reason line, the only place its words are, explains each recipient the part leaves bare.
Without a status part the reason lines are the report.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.mail import Mail
from dsn.mta import rfc3464
from dsn.mta.base import Found, find_reply_code, section
from dsn.mta.statuspart import Layout, read_records

__all__ = ["parse"]

_START: Final = re.compile(r"^[ \t]*-+[ \t]*The following addresses had delivery problems", re.M)
_LAYOUT: Final = Layout(
    recipient=re.compile(r"^[ \t]*<(?P<addr>[^<>\s]+@[^<>\s]+)>[ \t]+\((?P<why>.*)\)[ \t]*$"),
)


def parse(mail: Mail) -> list[Found] | None:
    # The gateway stamps X-NAI-Header on all mail it passes, other MTAs' bounces included:
    # only its own report, with its own heading, is claimed.
    if "Modified by McAfee" not in mail.header("X-NAI-Header") or not _START.search(mail.text):
        return None
    lines = read_records(mail, section(mail.text, _START, None), _LAYOUT, action="failed") or []
    if not mail.status_texts:
        return lines or None
    # The status part's own fields, without rfc3464's fill from a scan of the text: the
    # appliance's reason line is the better fill.
    found = rfc3464.records_to_found(*rfc3464.parse_records(mail.status_texts))
    if not found:
        return lines or None
    by_addr = {entry.recipient: entry for entry in lines}
    for entry in found:
        own = by_addr.get(entry.recipient)
        if own is None and len(found) == len(lines) == 1:
            own = lines[0]
        if own is not None and own.diagnostic and own.diagnostic not in entry.diagnostic:
            entry.diagnostic = f"{entry.diagnostic} {own.diagnostic}".strip()
            entry.status = rfc3464.better_status(entry.status, entry.diagnostic)
            entry.reply_code = entry.reply_code or find_reply_code(entry.diagnostic)
    if any(not entry.diagnostic for entry in found):
        # No reason line for some: rfc3464's own fill from the text, as without this parser.
        return rfc3464.parse(mail)
    return found
