"""Postfix bounces whose delivery-status part is missing or empty ("Delivery report
unavailable"): the human-readable part has ``<addr>: host ... said: 550 ...`` blocks.

Also Postfix's notices to the postmaster ("Postfix SMTP server: errors from ...",
``notify_classes``): no report, only "Transcript of session follows." with `` In:`` and
``Out:`` lines.  A recipient whose ``RCPT TO`` was refused failed with that reply; an
accepted one failed with the first refusal after it (``DATA``, end of data), and not at
all when every later reply succeeded.  The 2xx replies before the failure say nothing
about it (a ``250 2.1.5 Ok`` to RCPT is not the status of a ``451 4.3.0`` to DATA).

Postfix's ``success_template`` (bounce.cf: "Your message was successfully delivered to the
destination(s) listed below.") lists recipients the same way when the report part is
missing: those are delivery reports, nothing failed.
"""

from __future__ import annotations

import re
from typing import Final

from dsn.address import normalise_address
from dsn.mail import Mail
from dsn.mta.base import Found, find_reply_code, find_status, parse_text_report

__all__ = ["parse"]

_MARKER: Final = re.compile(
    r"^This is the (?:mail system at host|Postfix program at host)", re.M | re.I
)
_SUCCESS: Final = re.compile(
    r"^Your message was successfully delivered to the destination\(s\)", re.M | re.I
)
_TRANSCRIPT: Final = re.compile(r"^Transcript of session follows\.?[ \t]*$", re.M)
_TURN: Final = re.compile(r"^[ \t]*(In|Out):[ \t]*(.*)$")
_RCPT: Final = re.compile(r"^RCPT\s+TO:\s*<([^>]*)>", re.I)
_REPLY: Final = re.compile(r"^([245])\d\d[ -]")


def parse(mail: Mail) -> list[Found] | None:
    if _MARKER.search(mail.text):
        found = parse_text_report(mail)
        if found and _SUCCESS.search(mail.text):
            for entry in found:
                entry.action = "delivered"
        return found
    if mail.subject.startswith("Postfix SMTP server: errors from"):
        return _parse_transcript(mail.text)
    return None


def _turns(text: str) -> list[tuple[str, str]]:
    """``(In|Out, text)`` pairs; indented continuation lines join the turn above."""
    match = _TRANSCRIPT.search(text)
    if match is None:
        return []
    turns: list[tuple[str, str]] = []
    for line in text[match.end() :].split("\n"):
        turn = _TURN.match(line)
        if turn is not None:
            turns.append((turn.group(1), turn.group(2).strip()))
        elif line[:1] in (" ", "\t") and line.strip() and turns:
            side, said = turns[-1]
            turns[-1] = (side, f"{said} {line.strip()}")
        elif line.strip() and turns:
            break  # prose after the transcript
    return turns


def _parse_transcript(text: str) -> list[Found] | None:
    turns = _turns(text)
    found: list[Found] = []
    pending: list[str] = []  # recipients accepted, waiting for the rest of the session
    for index, (side, said) in enumerate(turns):
        if side != "In":
            continue
        rcpt = _RCPT.match(said)
        reply = _reply_after(turns, index)
        failed = reply is not None and reply[0] in "45"
        if rcpt is not None:
            addr = normalise_address(rcpt.group(1))
            if addr is None:
                continue
            if failed and reply is not None:
                found.append(_found(addr, reply))
            else:
                pending.append(addr)
        elif failed and reply is not None and pending:
            found.extend(_found(addr, reply) for addr in pending)
            pending = []
    return found or None


def _reply_after(turns: list[tuple[str, str]], index: int) -> str | None:
    """The server's answer to the command at ``index``: its first refusal, else its reply.

    ``DATA`` is answered twice with no ``In:`` between (``354``, then the verdict on the
    message), so every ``Out:`` reply up to the next command counts.
    """
    replies: list[str] = []
    lines: list[str] = []
    for side, said in turns[index + 1 :]:
        if side != "Out":
            break
        lines.append(said)
        if said[3:4] != "-":  # "250-..." continues a reply, "250 ..." ends it
            replies.append(" ".join(lines))
            lines = []
    replies = [r for r in replies if _REPLY.match(r)]
    for reply in replies:
        if reply[0] in "45":
            return reply
    return replies[0] if replies else None


def _found(addr: str, reply: str) -> Found:
    return Found(
        recipient=addr,
        diagnostic=reply,
        status=find_status(reply),
        reply_code=find_reply_code(reply),
        action="failed" if reply[0] == "5" else "delayed",
    )
