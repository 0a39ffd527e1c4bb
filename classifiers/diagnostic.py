"""Normalise a diagnostic text and pull the SMTP reply code and enhanced status out of it.

Quirks handled (RFC 3464 §2.3.6 Diagnostic-Code, RFC 5321 §4.2 multi-line replies):
- a leading diagnostic type ("smtp; 550 ...", "X-Postfix; host ... said: 554 ...");
- multi-line replies ("550-5.1.1 The email account ...\\n550-5.1.1 double-checking ...") whose
  repeated code prefixes break phrases in two, also when a reporting MTA folded them into one line;
- the reply code after "said:" (Postfix) or after "host ... [ip]:" (Exim) rather than at the start;
- several statuses in one text ("5.1.0 - Unknown address error 550-'5.7.1 ... Access denied'"):
  the first specific one (detail not 0) wins over a generic x.y.0;
- Postfix address verification (ADDRESS_VERIFICATION_README): smtpd answers with
  ``unverified_recipient_reject_code`` (450 by default) and quotes the probe's result, so
  "450 4.1.1 <rcpt>: Recipient address rejected: undeliverable address: host mx[...] said: 550
  5.1.1 User unknown" carries the remote server's permanent answer inside a transient one
  (``Diagnostic.verified_status``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Matching only looks at this much normalised text: the reason is in the first lines, and long
# Exchange dumps ("MapiExceptionShutoffQuotaExceeded:00.00000:FF000000, ...") only cost time.
MAX_TEXT = 2048

_TYPE_PREFIX = re.compile(r"^\s*([A-Za-z][\w.-]*)\s*;\s*")
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\d|\.\d)")
_LEADING_REPLY = re.compile(r"^[#<>\s]*([245]\d\d)(?=[\s:-]|$)")
_SAID_REPLY = re.compile(
    r"(?:said|reason|returned was|error)\s*:\s*(?:\d{3}\s+)?([245]\d\d)(?=[\s-])", re.IGNORECASE
)
_REPLY_BEFORE_STATUS = re.compile(
    r"(?:^|[\s:;(\"'\]>])([245]\d\d)[\s-]+['\"]?#?[245]\.\d{1,3}\.\d{1,3}(?!\d|\.\d)"
)
_TRANSCRIPT_REPLY = re.compile(r"<<<\s*([245]\d\d)(?=[\s-])")
_CONTINUATION = re.compile(r"^\s*([245]\d\d)[ -](?:\s*#?[245]\.\d{1,3}\.\d{1,3}(?!\d|\.\d))?\s*")
_SPACES = re.compile(r"\s+")
_VERIFIED = re.compile(
    r"(?:unverified|undeliverable) address: .{0,300}?said: 5\d\d[ -]#?(5\.\d{1,3}\.\d{1,3})(?!\d|\.\d)",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A diagnostic text made ready for matching, with the codes found in it."""

    text: str  # whitespace collapsed, continuation prefixes removed, at most MAX_TEXT chars
    reply_code: int | None
    status: str | None
    # the permanent status a Postfix address-verification probe got, quoted in a 4xx reply
    verified_status: str | None = None


def parse_status(value: str | None) -> str | None:
    """Return the first ``d.ddd.ddd`` in a Status field value ("5.0.0 (permanent failure)")."""
    if not value:
        return None
    found = _STATUS.search(value)
    if found is None:
        return None
    return f"{found.group(1)}.{int(found.group(2))}.{int(found.group(3))}"


def is_generic(status: str) -> bool:
    """x.0.0 and x.y.0 say "something failed" and little more (RFC 3463 §3.1)."""
    return status.endswith(".0")


def _pick_status(text: str) -> str | None:
    """First specific failure status; a session transcript's "250 2.1.0 Ok" comes last."""
    best: str | None = None
    best_rank = 4
    for found in _STATUS.finditer(text):
        status = f"{found.group(1)}.{int(found.group(2))}.{int(found.group(3))}"
        rank = (2 if status[0] == "2" else 0) + (1 if is_generic(status) else 0)
        if rank == 0:
            return status
        if rank < best_rank:
            best, best_rank = status, rank
    return best


def _find_reply(text: str) -> int | None:
    """The reply code, preferring a failure over a success seen earlier in a transcript."""
    first: int | None = None
    for pattern in (_LEADING_REPLY, _SAID_REPLY, _REPLY_BEFORE_STATUS, _TRANSCRIPT_REPLY):
        for found in pattern.finditer(text):
            code = int(found.group(1))
            if code >= 400:
                return code
            if first is None:
                first = code
    return first


def _strip_repeats(text: str, reply: int, status: str | None) -> str:
    """Drop the code prefixes a multi-line reply repeats on every line, folded or not."""
    code = str(reply)
    # "550-5.1.1 " anywhere after the start (a folded continuation line), and "550 5.1.1 " when
    # it repeats the leading pair later on: both are noise between the words of one sentence.
    if status:
        pair = rf"#?{re.escape(status)}(?!\d|\.\d)"
        repeated = re.compile(rf"(?<=\S)\s+{code}(?:-(?:{pair})?|\s+{pair})\s*")
    else:
        repeated = re.compile(rf"(?<=\S)\s+{code}-\s*")
    return repeated.sub(" ", text)


def normalise(diagnostic: str | None) -> Diagnostic:
    """Collapse whitespace, strip the diagnostic type and repeated codes; extract the codes."""
    if not diagnostic:
        return Diagnostic("", None, None)
    raw = diagnostic[: MAX_TEXT * 2]
    lines = raw.splitlines()
    if len(lines) > 1:
        # RFC 5321 §4.2.1: every line but the last is "code-text", the last "code text".
        first = _CONTINUATION.match(_TYPE_PREFIX.sub("", lines[0], count=1))
        if first is not None:
            code = first.group(1)
            rest = []
            for line in lines[1:]:
                cont = _CONTINUATION.match(line)
                rest.append(line[cont.end() :] if cont and cont.group(1) == code else line)
            lines = [lines[0], *rest]
        raw = " ".join(lines)
    # "smtp;" says nothing; other types ("X-Unix; 77", "X-Postfix; ...") are kept for the rules.
    found = _TYPE_PREFIX.match(raw)
    if found is not None and found.group(1).lower() == "smtp":
        raw = raw[found.end() :]
    text = _SPACES.sub(" ", raw).strip()
    codes_from = _TYPE_PREFIX.sub("", text, count=1)
    reply = _find_reply(codes_from)
    status = _pick_status(codes_from)
    if reply is not None:
        lead = _LEADING_REPLY.match(codes_from)
        lead_status = _STATUS.match(codes_from, lead.end() + 1) if lead else None
        pair_status = lead_status.group(0) if lead_status else None
        text = _strip_repeats(text, reply, pair_status)
    verified = _VERIFIED.search(codes_from)
    verified_status = parse_status(verified.group(1)) if verified else None
    return Diagnostic(text[:MAX_TEXT], reply, status, verified_status)
