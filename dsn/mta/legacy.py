"""Older mailers whose reports are a recipient list between two marker lines of their own,
one layout each (the layouts are recorded in flufl.bounce's detector table; the marker
lines are each writer's own):

* L-Soft LSMTP for Windows: "--> Error description:", one ``Error-for: addr`` record each
  with the reason on the lines below it, to "Error-End:";
* the "E500 SMTP Mail Service" gateway: "---- Failed Recipients ----", ``<addr>`` lines, to
  "---- Returned Mail ----";
* a university mailer of the 1990s (Yale, UC Irvine): "Message not delivered to the
  following addresses:", one address per line, the reason for all of them under "Error
  detail";
* delay warnings that say so before or after the recipients: MessageSwitch's "This is just
  a warning, you do not need to take any action" and Symantec's gateway's "Delivery attempts
  will continue to be made" -- delays, never failures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from dsn.mail import Mail
from dsn.mta.base import Found, bounce_own_addresses, scan_text, section
from dsn.mta.statuspart import Layout, read_records

__all__ = ["parse"]


@dataclass(frozen=True, slots=True)
class _Format:
    start: re.Pattern[str]
    end: re.Pattern[str] | None
    layout: Layout


_ADDR: Final = r"<?(?P<addr>[^<>\s@]+@[^<>\s@]+?)>?"
_FORMATS: Final = (
    _Format(  # L-Soft LSMTP
        re.compile(r"^--> Error description:[ \t]*$", re.M),
        re.compile(r"^Error-End:", re.M),
        Layout(recipient=re.compile(rf"^Error-for:[ \t]+{_ADDR}[ \t]*$")),
    ),
    _Format(  # E500 SMTP Mail Service
        re.compile(r"^[ \t]*-{4,}[ \t]*Failed Recipients[ \t]*-{4,}", re.M),
        re.compile(r"^[ \t]*-{4,}[ \t]*Returned Mail[ \t]*-{4,}", re.M),
        Layout(recipient=re.compile(r"^[ \t]*<(?P<addr>[^<>\s@]+@[^<>\s@]+)>")),
    ),
    _Format(  # Yale / UC Irvine
        re.compile(r"^[ \t]*Message not delivered to the following addresses?:?", re.M | re.I),
        None,
        Layout(
            recipient=re.compile(rf"^[ \t]+{_ADDR}[ \t]*$"),
            detached=re.compile(r"^[ \t]*Error detail", re.I),
        ),
    ),
)
_WARNING: Final = re.compile(
    r"This is just a warning, you do not need to take any action"
    r"|Delivery attempts will continue to be made",
    re.I,
)


def parse(mail: Mail) -> list[Found] | None:
    for fmt in _FORMATS:
        match = fmt.start.search(mail.text)
        if match is None:
            continue
        block = section(mail.text[match.start() :], fmt.start, fmt.end)
        found = read_records(mail, block, fmt.layout)
        if found:
            return found
    if _WARNING.search(mail.text):
        warned = scan_text(mail.text, exclude=bounce_own_addresses(mail))
        for entry in warned:
            entry.action = "delayed"
        return warned or None
    return None
