"""Oracle (Sun, iPlanet) Communications Messaging Server and its ancestor, Netscape
Messaging Server, when their report has no usable status part.

Oracle/Sun (``Content-Type`` boundary ``Boundary_(ID_...)``): "This report relates to a
message you sent with the following header fields:", the original's header lines, then
"Your message cannot be delivered to the following recipients:" and one record each,
indented two spaces: "Recipient address: addr", "Original address: addr" (the address the
message was sent to, before the server rewrote it: the one reported), "Reason: Remote SMTP
server has rejected address", "Diagnostic code: smtp;550 5.1.1 ...", "Remote system: dns;...".
Its ``message/delivery-status`` part, when present, is read by ``rfc3464`` first.

Netscape Messaging Server 3.x/4.x ("Mail System Error - Returned Mail"): "This Message was
undeliverable due to the following reason:", then either "Each of the following recipients
was rejected by a remote mail server." with ``Recipient: <addr>`` / ``Reason: ...`` pairs,
or a paragraph of reason ("The user(s) account is temporarily over quota.", "Your message
was not delivered within 5 days: Host example.org is not responding.") and the recipients
as ``<addr>`` lines; it ends with "Please reply to Postmaster@host if you feel this message
to be in error.".  NMS 3.6 sends this in a ``multipart/report`` whose status part names no
recipient, which ``rfc3464`` declines.  Some of its notices (and other mailers of its time)
keep only "The following recipients did not receive this message:" and the ``<addr>``
lines below it; that heading, with recipients in angle brackets on lines of their own
under it, is read the same way.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import ADDRESS, normalise_address
from dsn.mail import Mail
from dsn.model import MAX_RECIPIENTS
from dsn.mta.base import (
    Found,
    delay_action,
    find_reply_code,
    find_status,
    section,
    sharing_diagnostic,
)

__all__ = ["parse"]

_ORACLE: Final = re.compile(
    r"^This report relates to a message you sent with the following header fields:", re.M
)
_NETSCAPE: Final = re.compile(
    r"^[ \t]*This Message was undeliverable due to the following reason:", re.M | re.I
)
_FIELD: Final = re.compile(
    r"^[ \t]*(Recipient address|Original address|Reason|Diagnostic code|Remote system"
    r"|Recipient):[ \t]*(.*?)[ \t]*$",
    re.I,
)
_ANGLE_LINE: Final = re.compile(rf"^[ \t]*<{ADDRESS.pattern}>[ \t]*$")
_DID_NOT_RECEIVE: Final = re.compile(
    r"^[ \t]*The following recipients did not receive this message:[ \t]*$", re.M | re.I
)
_NETSCAPE_END: Final = re.compile(r"^[ \t]*Please reply to ", re.M | re.I)
# Lines of the Netscape reason paragraph that only introduce the recipient list.
_LIST_INTRO: Final = re.compile(
    r"following recipients (?:did not receive|was rejected)|reasons given by the server"
    r"|help you determine why|each recipient was rejected",
    re.I,
)


def parse(mail: Mail) -> list[Found] | None:
    if _ORACLE.search(mail.text):
        return _records(mail, mail.text)
    match = _NETSCAPE.search(mail.text)
    if match is not None:
        text = section(mail.text[match.start() :], _NETSCAPE, _NETSCAPE_END)
        return _records(mail, text) or _angle_list(mail, text)
    if _DID_NOT_RECEIVE.search(mail.text):
        # Netscape's list heading without its opening line: the text above explains.
        return _angle_list(mail, section(mail.text, None, _NETSCAPE_END))
    return None


def _records(mail: Mail, text: str) -> list[Found] | None:
    """``Recipient address:`` / ``Recipient:`` records and the fields under each."""
    records: list[dict[str, str]] = []
    last = ""  # the field a folded line continues
    for line in text.split("\n"):
        field = _FIELD.match(line)
        if field is None:
            if last in ("reason", "diagnostic") and line[:1] in (" ", "\t") and line.strip():
                records[-1][last] += " " + line.strip()
            else:
                last = ""
            continue
        name, value = field.group(1).lower(), field.group(2)
        if name in ("recipient address", "recipient"):
            if len(records) >= MAX_RECIPIENTS:
                break
            records.append({"recipient": value})
            last = ""
        elif records:
            last = {"diagnostic code": "diagnostic", "remote system": "remote"}.get(name, name)
            records[-1].setdefault(last, value)
    found: dict[str, Found] = {}
    for record in records:
        addr = normalise_address(record.get("original address")) or normalise_address(
            record["recipient"]
        )
        if addr is None or addr in found:
            continue
        diagnostic = record.get("diagnostic", "")
        diagnostic = re.sub(r"^\s*smtp\s*;\s*", "", diagnostic, flags=re.I)
        reason = record.get("reason", "")
        words = " ".join(w for w in (diagnostic, reason) if w)
        remote = record.get("remote", "")
        found[addr] = Found(
            recipient=addr,
            diagnostic=words,
            status=find_status(words),
            reply_code=find_reply_code(words),
            action=delay_action(mail, words),
            remote_mta=re.sub(r"^\s*dns\s*;\s*", "", remote, flags=re.I).split(" ")[0].lower()
            or None,
        )
    return list(found.values()) or None


def _angle_list(mail: Mail, text: str) -> list[Found] | None:
    """Netscape's reason paragraph followed by the recipients as ``<addr>`` lines."""
    reasons: list[str] = []
    recipients: list[str] = []
    for line in text.split("\n"):
        alone = _ANGLE_LINE.match(line)
        if alone is not None:
            addr = normalise_address(alone.group(1))
            if addr is not None and addr not in recipients and len(recipients) < MAX_RECIPIENTS:
                recipients.append(addr)
        elif line.strip() and not recipients and len(reasons) < 12 and not _LIST_INTRO.search(line):
            reasons.append(line.strip())
    reason = " ".join(reasons)
    return sharing_diagnostic(recipients, reason, delay_action(mail, reason)) or None
