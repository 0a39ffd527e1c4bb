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
* a mail server of ISPs of the 2000s (Telia among them): "- These recipients of your
  message have been processed by the mail server:", then one record per recipient in the
  RFC 3464 vocabulary, ``addr; Failed; 5.1.1 (bad destination mailbox address)``, with the
  remote server's words indented below it ("Remote MTA mx.example.org: SMTP diagnostic:
  552 ...", " - SMTP protocol diagnostic: 554 ...");
* delay warnings that say so before or after the recipients: MessageSwitch's "This is just
  a warning, you do not need to take any action" and Symantec's gateway's "Delivery attempts
  will continue to be made" -- delays, never failures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from dsn.address import normalise_address
from dsn.mail import Mail
from dsn.model import MAX_RECIPIENTS
from dsn.mta.base import Found, bounce_own_addresses, find_reply_code, scan_text, section
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
_PROCESSED: Final = re.compile(
    r"^[ \t]*-?[ \t]*These recipients of your message have been processed by the mail server:",
    re.M,
)
_PROCESSED_RECORD: Final = re.compile(
    r"^[ \t]*<?(?P<addr>[^<>\s;@]+@[^<>\s;]+?)>?;[ \t]*(?P<action>Failed|Delayed|Delivered"
    r"|Relayed|Expanded)[ \t]*(?:;[ \t]*(?P<status>[245]\.\d{1,3}\.\d{1,3})?[ \t]*(?P<why>.*))?$",
    re.I,
)
_WARNING: Final = re.compile(
    r"This is just a warning, you do not need to take any action"
    r"|Delivery attempts will continue to be made",
    re.I,
)


def parse(mail: Mail) -> list[Found] | None:
    processed = _PROCESSED.search(mail.text)
    if processed is not None:
        return _processed_records(mail.text[processed.end() :])
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


def _processed_records(text: str) -> list[Found] | None:
    """``addr; Failed; 5.1.1 (reason)`` records, each with the indented lines below it."""
    found: dict[str, Found] = {}
    current: Found | None = None
    for line in text.split("\n"):
        record = _PROCESSED_RECORD.match(line) if "@" in line and ";" in line else None
        if record is not None:
            addr = normalise_address(record.group("addr"))
            current = None
            if addr is not None and addr not in found and len(found) < MAX_RECIPIENTS:
                current = Found(
                    recipient=addr,
                    diagnostic=(record.group("why") or "").strip(),
                    status=record.group("status"),
                    action=record.group("action").lower(),
                )
                found[addr] = current
        elif (
            current is not None
            and line[:1] in (" ", "\t")
            and line.strip()
            and len(current.diagnostic) < 1000
        ):
            current.diagnostic = f"{current.diagnostic} {line.strip()}".strip()
    for entry in found.values():
        entry.reply_code = find_reply_code(entry.diagnostic)
    return list(found.values()) or None
