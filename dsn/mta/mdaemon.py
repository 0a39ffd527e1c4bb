"""MDaemon (Alt-N / MDaemon Technologies) and its SecurityGateway: "MDaemon Delivery Status
Notification" (header ``X-MDDSN-Message: Yes``), "The attached message had PERMANENT fatal
delivery errors", "YOUR MESSAGE WAS NOT DELIVERED TO ONE OR MORE RECIPIENTS", then the
delivery log between "--- Session Transcript ---" and "--- End Transcript ---".

The log is time-stamped lines: ``*  To: addr`` (the envelope recipient), ``--> RCPT
To:<addr>`` (a command), ``<-- 550 ...`` (the remote reply) and MDaemon's own findings
(``*  Name server reports domain name unknown``).  SecurityGateway adds "Failed address:
addr" before the log.  A recipient's reason is the failure reply to its RCPT, else the
session's first failure reply or finding.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import ADDRESS, normalise_address
from dsn.mail import Mail
from dsn.model import MAX_RECIPIENTS
from dsn.mta.base import Found, delay_action, find_reply_code, find_status, section

__all__ = ["parse"]

_MARKER: Final = re.compile(
    r"^[ \t]*(?:MDaemon Delivery Status Notification|YOUR MESSAGE WAS NOT DELIVERED TO ONE OR"
    r" MORE RECIPIENTS)",
    re.M,
)
_TRANSCRIPT: Final = re.compile(r"^[ \t]*--- Session Transcript ---", re.M)
_TRANSCRIPT_END: Final = re.compile(r"^[ \t]*--- End Transcript ---", re.M)
_FAILED: Final = re.compile(rf"^[ \t]*Failed address:[ \t]*<?{ADDRESS.pattern}>?", re.M)
# After the time stamp ("Wed 2013-09-11 12:22:04: "), what the line says.
_ENTRY: Final = re.compile(
    r"^[ \t]*(?:\w{3} )?\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?:[ \t]*(.*)$"
)
_TO: Final = re.compile(rf"^\*[ \t]+To:[ \t]*<?{ADDRESS.pattern}>?")
_RCPT: Final = re.compile(rf"^-->[ \t]*RCPT TO:[ \t]*<{ADDRESS.pattern}>", re.I)
_FAILURE_REPLY: Final = re.compile(r"^<--[ \t]*([45]\d\d\b.*)$")
_SESSION_LINES: Final = 12
# The log's own header lines, before the delivery begins.
_INFO: Final = re.compile(
    r"^\*[ \t]+(?:From|To|Subject|Size|Message-ID|Route slip|Parsing|Envelope)\b", re.I
)


def parse(mail: Mail) -> list[Found] | None:
    if not (mail.header("X-MDDSN-Message") or _MARKER.search(mail.text)):
        return None
    if not _TRANSCRIPT.search(mail.text):
        return None
    log = section(mail.text, _TRANSCRIPT, _TRANSCRIPT_END)
    recipients: list[str] = []
    for match in _FAILED.finditer(mail.text):
        _add(recipients, match.group(1))
    per_rcpt: dict[str, str] = {}
    session: list[str] = []
    current: str | None = None
    to_lines: list[str] = []
    whole_message = False
    for line in log.split("\n"):
        entry = _ENTRY.match(line)
        said = entry.group(1).strip() if entry else line.strip()
        to = _TO.match(said)
        if to is not None:
            to_lines.append(to.group(1))
            continue
        rcpt = _RCPT.match(said)
        if rcpt is not None:
            current = normalise_address(rcpt.group(1))
            continue
        if said.startswith("-->"):
            current = None
            continue
        reply = _FAILURE_REPLY.match(said)
        if reply is not None:
            if current is not None:
                per_rcpt.setdefault(current, reply.group(1))
            else:
                whole_message = True
            if len(session) < _SESSION_LINES:
                session.append(reply.group(1))
        elif said.startswith("*") and not _INFO.match(said):
            whole_message = True
            if len(session) < _SESSION_LINES:
                session.append(said.lstrip("* "))
    if not recipients:
        # Refused RCPTs name their recipients; a failure of the whole delivery (DATA, DNS)
        # concerns every envelope recipient ("*  To:").
        for addr in list(per_rcpt) + (to_lines if whole_message or not per_rcpt else []):
            _add(recipients, addr)
    shared = " ".join(session[:3])
    found: list[Found] = []
    for addr in recipients:
        reason = per_rcpt.get(addr) or shared
        found.append(
            Found(
                recipient=addr,
                diagnostic=reason,
                status=find_status(reason),
                reply_code=find_reply_code(reason),
                action=delay_action(mail, reason),
            )
        )
    return found or None


def _add(recipients: list[str], written: str) -> None:
    addr = normalise_address(written)
    if addr is not None and addr not in recipients and len(recipients) < MAX_RECIPIENTS:
        recipients.append(addr)
