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
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import ADDRESS, normalise_address
from dsn.mail import Mail
from dsn.model import MAX_RECIPIENTS
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
    if not _MARKER.search(mail.text):
        return None
    text = section(mail.text, None, _END)
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
