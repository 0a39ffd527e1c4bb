"""OpenSMTPD's plain-text notices (``smtpd/bounce.c``), sent before it wrote RFC 3464
reports and still by the versions that do not.

The notice opens "Hi!" / "This is the MAILER-DAEMON, please DO NOT REPLY to this e-mail."
(each line indented four spaces), then says what happened to the recipients listed below
it, one ``user@domain: reason`` line each at the left margin, and ends with "Below is a
copy of the original message:":

* "An error has occurred while attempting to deliver a message for the following list of
  recipients:" -- failed (an "Envelope expired" line is a failure after the queue lifetime,
  not a delay: nothing more will be tried);
* "A message is delayed for more than <duration> for the following list of recipients:" --
  delayed, except an "Envelope expired" line listed there by some versions: that envelope
  is gone;
* "Your message was successfully delivered to these recipients." / "... relayed to these
  recipients." -- delivered / relayed.

OpenSMTPD 4.x wrote one recipient per notice: "Recipient: user@domain", "Reason:", then the
reason on the next line.

Since 5.x the notice is the first part of a report whose ``message/delivery-status`` part
is read with ``rfc3464``'s reader (so this parser is tried before ``rfc3464``).  One quirk:
``bounce_add`` picks the notice from the envelope's status class, and an envelope expired
in the queue keeps its temporary class (4.4.7), so the final report for it is the *delay*
notice and its status part says ``Action: delayed``, while its line for the recipient says
"Envelope expired" (or "Delivery attempt ... expired"): the envelope is deleted and nothing
more will be tried.  Such a recipient is read as failed.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import ADDRESS, normalise_address
from dsn.mail import Mail
from dsn.model import MAX_RECIPIENTS
from dsn.mta import rfc3464
from dsn.mta.base import Found, find_reply_code, find_status, section

__all__ = ["parse"]

_MARKER: Final = re.compile(
    r"^[ \t]*This is the MAILER-DAEMON, please DO NOT REPLY to this e-?mail\.", re.M | re.I
)
_END: Final = re.compile(r"^[ \t]*Below is a copy of the original message", re.M)
_LINE: Final = re.compile(rf"^<?{ADDRESS.pattern}>?:[ \t]+(\S.*)$", re.M)
_OLD: Final = re.compile(
    rf"^[ \t]*Recipient:[ \t]*<?{ADDRESS.pattern}>?[ \t]*\n[ \t]*Reason:[ \t]*\n?[ \t]*(\S[^\n]*)",
    re.M,
)
# An envelope past the queue lifetime is gone, even when the notice that lists it is the
# delay warning (some versions list it there, "only a temporary failure report").
_EXPIRED: Final = re.compile(r"Envelope expired|Delivery attempt\b.*\bexpired", re.I)
# Which list follows: the notice states it before the recipients.
_NOTICES: Final = (
    (re.compile(r"A message is delayed for more than", re.I), "delayed"),
    (re.compile(r"successfully delivered to these recipients", re.I), "delivered"),
    (re.compile(r"relayed to these recipients", re.I), "relayed"),
)


def parse(mail: Mail) -> list[Found] | None:
    # Tried on every message (before rfc3464): a literal test first, the case-insensitive
    # marker search only on the few texts that can hold it.
    if "NOT REPLY" not in mail.text and "not reply" not in mail.text:
        return None
    if not _MARKER.search(mail.text):
        return None
    text = section(mail.text, None, _END)
    if mail.status_texts:
        return _report(mail, text)
    action = next((name for pattern, name in _NOTICES if pattern.search(text)), "failed")
    found: dict[str, Found] = {}
    pairs = [(m.group(1), m.group(2)) for m in _LINE.finditer(text)]
    if not pairs:
        pairs = [(m.group(1), m.group(2)) for m in _OLD.finditer(text)]
    for written, reason in pairs:
        addr = normalise_address(written)
        if addr is None or addr in found or len(found) >= MAX_RECIPIENTS:
            continue
        reason = reason.strip()
        found[addr] = Found(
            recipient=addr,
            diagnostic=reason,
            status=find_status(reason),
            reply_code=find_reply_code(reason),
            action="failed" if _EXPIRED.search(reason) else action,
        )
    return list(found.values()) or None


def _report(mail: Mail, text: str) -> list[Found] | None:
    """The status part, with the notice's "Envelope expired" lines read as final."""
    found = rfc3464.parse(mail)
    if not found:
        return None
    expired: dict[str, str] = {}
    for match in _LINE.finditer(text):
        addr = normalise_address(match.group(1))
        if addr is not None and _EXPIRED.search(match.group(2)):
            expired.setdefault(addr, match.group(2).strip())
    for entry in found:
        reason = expired.get(entry.recipient or "")
        if reason is not None and entry.action == "delayed":
            entry.action = "failed"
            # The notice's own line for it; rfc3464's fill from the text runs on into the
            # "temporary failure report" paragraph, which no longer holds.
            entry.diagnostic = reason
    return found
