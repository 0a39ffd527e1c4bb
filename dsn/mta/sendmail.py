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

V5 sendmail (and 8.x for local verdicts) writes the verdict without angle brackets:
``550 user@example.org... User unknown``, ``550 user@nosuch.example... Host unknown (Name
server: nosuch.example: host not found)``; such a line names its recipient too.  When the
transcript names none at all (only ``550 nosuch.example (tcp)... 550 Host unknown``), the
unsent message that follows is the original, and its single ``To`` is the recipient.

``savemail.c`` lists an alias's failure under the address it expanded to, followed by
"(expanded from: <addr>)": the message was sent to that address, which is the one reported.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import ADDRESS, find_addresses, normalise_address
from dsn.mail import Mail, header_text
from dsn.model import MAX_RECIPIENTS
from dsn.mta.base import (
    Found,
    delay_action,
    find_reply_code,
    find_status,
    parse_text_report,
    section,
)

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
_BANNER: Final = re.compile(r"-{3,}[ \t]*[A-Z][A-Za-z ]{3,60}?[ \t]*-{3,}")
_SESSION: Final = re.compile(r"^\s*While talking to\b", re.I)
_RCPT_COMMAND: Final = re.compile(r"^\s*>>>\s*RCPT\s+TO:\s*<([^>]+)>", re.I)
_HOST_VERDICT: Final = re.compile(r"^\s*[245]\d\d [^\s<]+ \(\w+\)\.\.\.")
_VERDICT: Final = re.compile(r"^\s*[245]\d\d[ -]+<([^>]+)>\.\.\.")
# "550 user@example.org... User unknown", "550 5.1.2 user@nosuch.example... Host unknown"
_BARE_VERDICT: Final = re.compile(
    rf"^[ \t]*[245]\d\d(?:[ -]+[245]\.\d{{1,3}}\.\d{{1,3}})?[ \t]+{ADDRESS.pattern}\.\.\.[ \t]*(.*)$",
    re.M,
)
_EXPANDED: Final = re.compile(
    rf"^[ \t]*<?{ADDRESS.pattern}>?[ \t]*\n(?:[ \t]+\(reason:[^\n]*\)[ \t]*\n)?"
    rf"[ \t]+\(expanded from:[ \t]*<?{ADDRESS.pattern}>?[ \t]*\)",
    re.M,
)


def parse(mail: Mail) -> list[Found] | None:
    if not _MARKER.search(mail.text):
        return None
    report = section(mail.text, None, _END)
    found = parse_text_report(mail, end=_END) or []
    _add_bare_verdicts(mail, report, found)
    if not found:
        found = _unsent_to(mail, report)
    if found:
        _add_remote_replies(report, found)
        _report_expanded_from(report, found)
        for entry in found:
            # The section banners a recipient's lines run into are not its explanation.
            entry.diagnostic = " ".join(_BANNER.sub(" ", entry.diagnostic).split())
    return found or None


def _add_bare_verdicts(mail: Mail, text: str, found: list[Found]) -> None:
    known = {f.recipient for f in found}
    for match in _BARE_VERDICT.finditer(text):
        addr = normalise_address(match.group(1))
        if addr is None or addr in known or len(found) >= MAX_RECIPIENTS:
            continue
        line = " ".join(match.group(0).split())
        known.add(addr)
        found.append(
            Found(
                recipient=addr,
                diagnostic=line,
                status=find_status(line),
                reply_code=find_reply_code(line),
                action=delay_action(mail, line),
            )
        )


def _unsent_to(mail: Mail, text: str) -> list[Found]:
    """V5's per-host verdict names no recipient: the unsent original's single ``To`` does."""
    if mail.original is None:
        return []
    verdicts = [" ".join(line.split()) for line in text.split("\n") if _HOST_VERDICT.match(line)]
    failures = [v for v in verdicts if v[0] in "45"]
    to = find_addresses(header_text(mail.original, "To"))
    if not failures or len(to) != 1:
        return []
    line = failures[0]
    return [
        Found(
            recipient=to[0],
            diagnostic=line,
            status=find_status(line),
            reply_code=find_reply_code(line),
            action=delay_action(mail, line),
        )
    ]


def _report_expanded_from(text: str, found: list[Found]) -> None:
    """An alias's failure is reported by the address the message was sent to."""
    by_addr = {f.recipient: f for f in found}
    for match in _EXPANDED.finditer(text):
        final = normalise_address(match.group(1))
        sent_to = normalise_address(match.group(2))
        entry = by_addr.get(final or "")
        if entry is None or sent_to is None or sent_to in by_addr:
            continue
        entry.recipient = sent_to
        by_addr[sent_to] = entry


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
