"""Novell (Micro Focus, OpenText) GroupWise Internet Agent: "The message that you sent was
undeliverable to the following:", then one tab-indented line per recipient with GroupWise's
reason in parentheses ("\\tuser@example.org (user not found)", "\\tuser (User not on post
office)"), then "Possible causes:" and "Information about your message:" (and "Possibly
truncated original message follows:").

A recipient inside the GroupWise system may be written by its user ID alone; it is the
returned original's single ``To`` address when that address has the same local part.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import find_addresses, normalise_address
from dsn.mail import Mail, header_text
from dsn.model import MAX_RECIPIENTS
from dsn.mta.base import Found, delay_action, find_reply_code, find_status, section

__all__ = ["parse"]

_START: Final = re.compile(
    r"^[ \t]*The message that you sent was undeliverable to the following:", re.M
)
_END: Final = re.compile(
    r"^[ \t]*(?:Possible causes:|Information about your message:|Possibly truncated original)",
    re.M | re.I,
)
_LINE: Final = re.compile(r"^[ \t]+<?([^\s<>()]+?)>?[ \t]+\((.+)\)[ \t]*$")


def parse(mail: Mail) -> list[Found] | None:
    if not _START.search(mail.text):
        return None
    to = find_addresses(header_text(mail.original, "To")) if mail.original is not None else []
    found: dict[str, Found] = {}
    for line in section(mail.text, _START, _END).split("\n"):
        match = _LINE.match(line)
        if match is None or len(found) >= MAX_RECIPIENTS:
            continue
        written, reason = match.group(1), match.group(2).strip()
        addr = normalise_address(written) if "@" in written else _by_user_id(written, to)
        if addr is None or addr in found:
            continue
        found[addr] = Found(
            recipient=addr,
            diagnostic=reason,
            status=find_status(reason),
            reply_code=find_reply_code(reason),
            action=delay_action(mail, reason),
        )
    return list(found.values()) or None


def _by_user_id(user: str, to: list[str]) -> str | None:
    if len(to) == 1 and to[0].partition("@")[0] == user.lower():
        return to[0]
    return None
