"""Verizon Wireless gateways, two templates:

* ``vtext.com`` (SMS gateway), from ``post_master@vtext.com``: an ``Error:`` line, the
  remote reply ("550 - Requested action not taken: no such user here"), and a "Message
  details:" list whose ``RCPT TO:`` line names the recipient;
* ``vzwpix.com`` (MMS gateway), from ``sysadmin@...vzwpix.com``: "Message could not be
  delivered to mobile.", ``Error: No valid recipients for this MM``, and an "Original
  Message:" list whose ``To:`` line names the recipient.

Both name the recipient only inside the summary of the original message, so the summary's
``To``/``RCPT TO`` line is the recipient line, and everything else the explanation.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import normalise_address
from dsn.mail import Mail
from dsn.model import MAX_RECIPIENTS
from dsn.mta.base import Found, sharing_diagnostic
from dsn.mta.blocks import join_words

__all__ = ["parse"]

_VTEXT: Final = re.compile(r"\bpost_master@vtext\.com\b")
_VZWPIX: Final = re.compile(r"\bsysadmin@(?:[\w-]+\.)*vzwpix\.com\b")
_VTEXT_START: Final = re.compile(r"^Error:[ \t]", re.M)
_VZWPIX_START: Final = re.compile(r"^Message could not be delivered to mobile", re.M)
_VTEXT_RCPT: Final = re.compile(r"^[ \t]+RCPT TO:[ \t]*<?([^\s<>]+@[^\s<>]+)>?[ \t]*$")
_VZWPIX_RCPT: Final = re.compile(r"^[ \t]*To:[ \t]*(.*@.*)$")
# Summary lines that describe the original message, not the failure.
_SUMMARY: Final = re.compile(
    r"^[ \t]*(?:Message details:|Original Message:|Subject:|Sent date:|Date:|From:|MAIL FROM:)",
    re.I,
)


def parse(mail: Mail) -> list[Found] | None:
    if _VTEXT.search(mail.sender):
        start, rcpt = _VTEXT_START, _VTEXT_RCPT
    elif _VZWPIX.search(mail.sender):
        start, rcpt = _VZWPIX_START, _VZWPIX_RCPT
    else:
        return None
    match = start.search(mail.text)
    if match is None:
        return None
    recipients: list[str] = []
    explanation: list[str] = []
    # "Original Message:" is where the reader cuts off the returned original, so the
    # summary's To line is in the original's text (vzwpix).
    summary = "\n".join(
        line for line in mail.original_text.split("\n")[:20] if rcpt.match(line) is not None
    )
    for line in f"{mail.text[match.start() :]}\n{summary}".split("\n"):
        named = rcpt.match(line)
        if named is not None:
            addr = normalise_address(named.group(1))
            if addr is not None and addr not in recipients and len(recipients) < MAX_RECIPIENTS:
                recipients.append(addr)
            continue
        if line.strip() and not _SUMMARY.match(line):
            explanation.append(line)
    diagnostic = join_words(explanation)
    return sharing_diagnostic(recipients, diagnostic, "failed") or None
