"""Sendmail (and V5 sendmail, and MTAs imitating it) without a delivery-status part.

Markers: "----- The following addresses had permanent fatal errors -----" and
"----- Transcript of session follows -----"; recipients appear as ``<addr>``, ``>>> addr``
or ``554 <addr>... reason`` in the transcript.

The transcript is a list of statements, not paragraphs: "While talking to host:" opens a
session whose ``>>>`` commands and ``<<<`` remote replies follow, and each
``NNN <addr>... reason`` line is sendmail's verdict on one recipient.  A line such as
``550 example.org (smtp)... 550 Host unknown`` is the verdict on the *next* host, so it
must not be read as the end of the recipient line above it.  The remote server's own
words (``<<< 550 ...``) explain the verdicts of that session: the reply to
``RCPT To:<addr>`` those on that address, any other reply every recipient of the session.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import normalise_address
from dsn.mail import Mail
from dsn.mta.base import Found, find_reply_code, find_status, parse_text_report, section

__all__ = ["parse"]

# [ \t]*, not \s*: with re.M a \s* after "^" runs across every following blank line, and is
# retried from each of them (quadratic in a message of empty lines).
_MARKER: Final = re.compile(
    r"^[ \t]*-{3,}[ \t]*(?:The following addresses had|Transcript of session follows"
    r"|Unsent message follows)",
    re.M | re.I,
)
_END: Final = re.compile(
    r"^[ \t]*-{3,}[ \t]*(?:Original message|Unsent message|Returned message)", re.M | re.I
)
_SESSION: Final = re.compile(r"^\s*While talking to\b", re.I)
_RCPT_COMMAND: Final = re.compile(r"^\s*>>>\s*RCPT\s+TO:\s*<([^>]+)>", re.I)
_HOST_VERDICT: Final = re.compile(r"^\s*[245]\d\d [^\s<]+ \(\w+\)\.\.\.")
_VERDICT: Final = re.compile(r"^\s*[245]\d\d[ -]+<([^>]+)>\.\.\.")


def parse(mail: Mail) -> list[Found] | None:
    if not _MARKER.search(mail.text):
        return None
    found = parse_text_report(mail, end=_END)
    if found:
        _add_remote_replies(section(mail.text, None, _END), found)
    return found


def _remote_replies(text: str) -> dict[str, list[str]]:
    """Recipient -> the ``<<<`` replies of the session its verdict belongs to."""
    replies: dict[str, list[str]] = {}
    session: list[str] = []  # replies to commands other than RCPT
    rcpt: str | None = None
    judged = False  # a recipient verdict of this session has been seen
    for line in text.split("\n"):
        stripped = line.strip()
        if _SESSION.match(line) or (judged and _HOST_VERDICT.match(line)):
            session, rcpt, judged = [], None, False
        elif stripped.startswith(">>>"):
            command = _RCPT_COMMAND.match(line)
            rcpt = normalise_address(command.group(1)) if command else None
        elif stripped.startswith("<<<"):
            reply = stripped[3:].strip()
            if rcpt is not None:
                replies.setdefault(rcpt, []).append(reply)
            else:
                session.append(reply)
        else:
            verdict = _VERDICT.match(line)
            addr = normalise_address(verdict.group(1)) if verdict else None
            judged = judged or addr is not None
            if addr is not None and addr not in replies and session:
                replies[addr] = list(session)
    return replies


def _add_remote_replies(text: str, found: list[Found]) -> None:
    replies = _remote_replies(text)
    for entry in found:
        said = [r for r in replies.get(entry.recipient, ()) if r not in entry.diagnostic]
        if not said:
            continue
        entry.diagnostic = " ".join([*said, entry.diagnostic]).strip()
        entry.status = find_status(entry.diagnostic)
        entry.reply_code = find_reply_code(entry.diagnostic)
