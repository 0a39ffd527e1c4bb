"""What every MTA parser returns, and the text scanning they share.

Most non-standard bounces are a block of prose per failed recipient: an address on a line
of its own (or ``<addr>:``, ``addr ... reason``) followed by the remote server's reply.
``scan_text`` finds those *anchors* and the lines that belong to each; the MTA modules
decide where the report starts and ends and whether the message is theirs at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from dsn.address import ADDRESS, normalise_address
from dsn.mail import Mail
from dsn.model import DIAGNOSTIC_MAX, MAX_RECIPIENTS

__all__ = [
    "Found",
    "Parser",
    "bounce_own_addresses",
    "delay_action",
    "find_reply_code",
    "find_status",
    "parse_text_report",
    "read_headed_blocks",
    "scan_text",
    "section",
    "sharing_diagnostic",
]


@dataclass(slots=True)
class Found:
    """One recipient as a parser found it, before classification."""

    recipient: str
    diagnostic: str = ""
    status: str | None = None
    reply_code: int | None = None
    action: str | None = None
    remote_mta: str | None = None
    # RFC 3464 §2.2.2: the MTA that wrote the report. With no Remote-MTA, it is the host that
    # refused the message itself (a provider's own MX bouncing after acceptance).
    reporting_mta: str | None = None
    original_recipient: str | None = None
    last_attempt_date: str | None = None
    will_retry_until: str | None = None
    # The sending software's own verdict (PowerMTA's X-PowerMTA-BounceCategory): recorded
    # beside the classification, never used to make it.
    vendor_category: str | None = None


Parser = Callable[[Mail], list[Found] | None]
"""A parser returns ``None`` when the message is not its format, else what it found."""

_STATUS: Final = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d]|\.\d)")
_REPLY_STATUS: Final = re.compile(r"(?<![\d.])([245][0-5]\d)[ -]+#?([245]\.\d{1,3}\.\d{1,3})\b")
_REPLY: Final = re.compile(
    r"(?<![\w.\[/:-])([245][0-5][0-9])(?:[ -]|$)(?![\d.]*\s*(?:bytes|KB|MB))"
)


def _first_failure(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The first match whose code is a failure (4xx/5xx), else the first match at all.

    A transcript ("250 2.1.5 Ok ... 451 4.3.0 Error") reports the failure last; a success
    code only speaks for a text with no failure in it (a delivery report).
    """
    first = None
    for match in pattern.finditer(text):
        if match.group(1)[0] != "2":
            return match
        if first is None:
            first = match
    return first


def find_status(text: str | None) -> str | None:
    """The enhanced status code (RFC 3463) in a text: the first failure, else the first."""
    if not text:
        return None
    match = _first_failure(_STATUS, text)
    return ".".join(match.groups()) if match else None


def find_reply_code(text: str | None) -> int | None:
    """The SMTP reply code in a diagnostic text: ``550 5.1.1 ...`` or ``... said: 550 ...``."""
    if not text:
        return None
    paired = _first_failure(_REPLY_STATUS, text)
    if paired is None or paired.group(1)[0] == "2":
        alone = _first_failure(_REPLY, text)
        if alone is not None and (paired is None or alone.group(1)[0] != "2"):
            return int(alone.group(1))
    return int(paired.group(1)) if paired else None


def section(text: str, start: re.Pattern[str] | None, end: re.Pattern[str] | None) -> str:
    """The part of ``text`` after the ``start`` line and before the ``end`` line."""
    if start is not None:
        match = start.search(text)
        if match is None:
            return ""
        nl = text.find("\n", match.end())
        text = text[nl + 1 :] if nl >= 0 else ""
    if end is not None:
        match = end.search(text)
        if match is not None:
            text = text[: match.start()]
    return text


_A = ADDRESS.pattern
_ERROR_WORD = (
    r"(?:full|unknown|invalid|disabled|reject\w*|denied|not found|fail\w*|error|refused"
    r"|unavailable|no such|does not exist|suspended|inactive|locked|over quota)"
)
# Positions in which an address names a failed recipient (rather than being mentioned).
_ANCHORS: Final = [
    # a line that is just the address: "  user@example.com", "<user@example.com>:", "* addr"
    re.compile(rf"^[ \t]*(?:[*\-•][ \t]+)?[<\"]?{_A}[>\"]?[ \t]*:?[ \t]*$"),
    # "<user@example.com>: host said ...", "<user@example.com>... User unknown",
    # ">>> user@example.com", "554 <user@example.com>... Host unknown" (sendmail transcript)
    re.compile(
        rf"^[ \t]*(?:>>>[ \t]*(?:RCPT TO:)?[ \t]*|[245]\d\d[ -]+)?<{_A}>[ \t]*"
        rf"(?::|\.\.\.|\(|,|[ \t]-|[ \t]*$)"
    ),
    re.compile(rf"^[ \t]*>>>[ \t]*{_A}"),
    # "user@example.com: reason", "user@example.com on <date>", "user@example.com (reason)"
    re.compile(
        rf"^[ \t]*\"?{_A}\"?[ \t]*(?::[ \t]|:$|\.\.\.|[ \t]on[ \t]|\(|[ \t]-+[ \t]|[ \t]*<)"
    ),
    # prose naming the recipient
    re.compile(
        rf"(?:delivering your (?:mail|message) to|deliver(?:y|ed)? to|delivered to the following"
        rf"|could not be delivered to|not be delivered to|failed to deliver to|addressed to"
        rf"|deliver (?:the |this |your )?(?:message|mail) to|did not reach"
        rf"|following (?:address|recipient)(?:\(es\)|es|s)?(?:[^@\n:]{{0,40}}:)?"
        rf"|recipient address|recipient|your message to|unable to deliver to|message for)"
        rf"[ \t]*(?:is|was|:)?[ \t]*[\"'(]?<?{_A}>?",
        re.I,
    ),
    # "User's mailbox is full: <user@example.com>", "Invalid final delivery userid: addr"
    re.compile(rf"\b{_ERROR_WORD}\b[^@\n]{{0,60}}:[ \t]*<?{_A}>?\.?[ \t]*$", re.I),
    # "RCPT TO:<user@example.com>" / "Final-Recipient: rfc822; user@example.com"
    re.compile(
        rf"(?:RCPT TO:?|(?:final|original)-recipient:[ \t]*(?:rfc822;)?)[ \t]*<?{_A}>?", re.I
    ),
]
_WHOLE_LINE: Final = frozenset({4, 5})  # anchors whose own line is part of the explanation
# Lines that begin a new statement, never the continuation of a recipient's explanation:
# sendmail's per-host verdict ("550 example.org (smtp)... 550 Host unknown") and its
# session lines ("While talking to mx.example.org:", ">>> DATA").
_STATEMENT: Final = re.compile(r"^[ \t]*(?:[245]\d\d [^\s<]+ \(\w+\)\.\.\.|While talking to |>>> )")
_HAS_CODE: Final = re.compile(r"(?<![\d.])[245]\d\d(?:[ -]|$)|(?<![\d.])[245]\.\d{1,3}\.\d{1,3}")
_BLANK_STOP: Final = 2
_DIAGNOSTIC_KEEP: Final = 4 * DIAGNOSTIC_MAX


def scan_text(
    text: str,
    *,
    exclude: frozenset[str] = frozenset(),
    max_lines: int = 12,
) -> list[Found]:
    """Find failed recipients in a human-readable report and the text that explains each
    (at most ``MAX_RECIPIENTS``: see ``dsn.model``)."""
    lines = text.split("\n")
    anchors: list[tuple[int, str, str]] = []  # line index, address, rest of the anchor line
    named: set[str] = set()
    for index, line in enumerate(lines):
        if "@" not in line:
            continue
        if len(named) > MAX_RECIPIENTS:
            break  # the anchor after the last kept recipient still ends its explanation
        for number, pattern in enumerate(_ANCHORS):
            match = pattern.search(line)
            if match is None:
                continue
            # With the character after it: "addressed to 'x@host'" is x@host, not 'x@host.
            addr = normalise_address(line[match.start(1) : match.end(1) + 1])
            if addr is None or addr in exclude:
                continue
            rest = line if number in _WHOLE_LINE else line[match.end() :]
            anchors.append((index, addr, rest))
            named.add(addr)
            break
    if not anchors:
        return []
    found: dict[str, Found] = {}
    for position, (index, addr, rest) in enumerate(anchors):
        stop = anchors[position + 1][0] if position + 1 < len(anchors) else len(lines)
        chunk = [rest]
        blanks = 0
        for line in lines[index + 1 : min(stop, index + 1 + max_lines)]:
            if not line.strip():
                blanks += 1
                if blanks >= _BLANK_STOP and len(chunk) > 1:
                    break
                continue
            if ("..." in line or "W" in line or ">>>" in line) and _STATEMENT.match(line):
                break
            blanks = 0
            chunk.append(line)
        diagnostic = " ".join(" ".join(chunk).split())
        entry = found.get(addr)
        if not _HAS_CODE.search(diagnostic):
            # The explanation sometimes precedes the address ("account is disabled.\n<addr>").
            previous = _previous_line(
                lines, index, anchors[position - 1][0] if position else -1, bool(diagnostic)
            )
            if previous and (entry is None or previous not in entry.diagnostic):
                diagnostic = f"{previous} {diagnostic}".strip()
        if entry is None:
            found[addr] = Found(recipient=addr, diagnostic=diagnostic)
        elif (
            diagnostic
            and len(entry.diagnostic) < _DIAGNOSTIC_KEEP
            and diagnostic not in entry.diagnostic
        ):
            # Bounded: an address named a hundred thousand times must not grow (and search)
            # its explanation each time.  Only the first DIAGNOSTIC_MAX characters are kept.
            entry.diagnostic = f"{entry.diagnostic} {diagnostic}".strip()
    kept = list(found.values())[:MAX_RECIPIENTS]
    for entry in kept:
        entry.status = find_status(entry.diagnostic)
        entry.reply_code = find_reply_code(entry.diagnostic)
    return kept


def _previous_line(lines: list[str], index: int, floor: int, explained: bool) -> str:
    for back in range(index - 1, max(floor, index - 3), -1):
        candidate = lines[back].strip()
        if candidate:
            if "@" in candidate or set(candidate) <= set("-=_*# "):
                return ""
            # A line ending in a colon introduces the list ("The following address(es)
            # failed:"): when lines under the address explain it, the heading does not.
            if explained and candidate.endswith(":"):
                return ""
            return candidate
    return ""


def parse_text_report(
    mail: Mail,
    *,
    start: re.Pattern[str] | None = None,
    end: re.Pattern[str] | None = None,
    action: str | None = None,
) -> list[Found] | None:
    """Scan the report text (optionally only between two marker lines) of a claimed message."""
    text = section(mail.text, start, end) if start or end else mail.text
    daemon = normalise_address(mail.sender)
    found = scan_text(text or mail.text, exclude=frozenset({daemon} if daemon else ()))
    if not found:
        return None
    for entry in found:
        entry.action = entry.action or action or delay_action(mail, entry.diagnostic)
    return found


_DELAY: Final = re.compile(
    r"\bdelayed\b|\bdelay\)|warning message only|will (?:be retried|continue trying|retry)"
    r"|not yet been delivered|still trying|temporar(?:y|ily) (?:failure|deferred)",
    re.I,
)
_PERMANENT: Final = re.compile(r"permanent|fatal|gave up|given up|giving up|failed", re.I)


def delay_action(mail: Mail, diagnostic: str) -> str:
    """``delayed`` for a warning that delivery is still being tried, else ``failed``."""
    if _warns_of_delay(mail) and not _PERMANENT.search(f"{mail.subject}\n{diagnostic}"):
        return "delayed"
    return "failed"


def sharing_diagnostic(recipients: list[str], diagnostic: str, action: str) -> list[Found]:
    """Every recipient with the one explanation the report gives for all of them."""
    status, reply_code = find_status(diagnostic), find_reply_code(diagnostic)
    return [
        Found(
            recipient=addr,
            diagnostic=diagnostic,
            status=status,
            reply_code=reply_code,
            action=action,
        )
        for addr in recipients
    ]


def read_headed_blocks(
    mail: Mail, head: re.Pattern[str], hint: str, *, reason_lines: int = 12
) -> list[Found]:
    """Recipients of a report written as one block per recipient: a ``head`` line naming the
    address (group 1; an optional group ``rest`` is the first words of the reason), then the
    reason's lines, to a blank line (CommuniGate Pro, qmail-send).

    ``hint`` is a substring every head line holds: the pattern is tried only on those lines.
    A recipient named twice keeps its first block; a block keeps ``reason_lines`` lines.
    """
    found: dict[str, Found] = {}
    reasons: dict[str, list[str]] = {}
    current: str | None = None
    for line in mail.text.split("\n"):
        match = head.match(line) if hint in line else None
        if match is not None:
            addr = normalise_address(match.group(1))
            current = None
            if addr is not None and addr not in found and len(found) < MAX_RECIPIENTS:
                current = addr
                found[addr] = Found(recipient=addr)
                rest = match.groupdict().get("rest")
                reasons[addr] = [rest] if rest else []
            continue
        if current is None:
            continue
        if not line.strip():
            if reasons[current]:
                current = None
            continue
        if len(reasons[current]) < reason_lines:
            reasons[current].append(line.strip())
    for addr, entry in found.items():
        reason = " ".join(reasons[addr])
        entry.diagnostic = reason
        entry.status = find_status(reason)
        entry.reply_code = find_reply_code(reason)
        entry.action = delay_action(mail, reason)
    return list(found.values())


def _warns_of_delay(mail: Mail) -> bool:
    # Searched once per message, not once per recipient: a report naming a thousand
    # recipients would otherwise run this search over the same 2,000 characters each time.
    if mail.delay_warning is None:
        mail.delay_warning = _DELAY.search(f"{mail.subject}\n{mail.text[:2000]}") is not None
    return mail.delay_warning


def bounce_own_addresses(mail: Mail) -> frozenset[str]:
    """The bounce's own From and To: never the failed recipient of the bounce itself."""
    addrs = {
        normalise_address(mail.sender),
        normalise_address(mail.header("To")),
    }
    return frozenset(a for a in addrs if a)


def with_failed_recipients_header(mail: Mail, found: list[Found] | None) -> list[Found] | None:
    """Complete text findings with ``X-Failed-Recipients`` (Exim's header, copied by Gmail).

    The text blocks sometimes name only a local part or a router; listed addresses the text
    did not name are added (with the report text as diagnostic) when the text found fewer
    recipients than the header lists.  Text findings are kept: where text and header
    disagree (a rewritten address), the text names the address the remote server refused.
    """
    header = mail.header("X-Failed-Recipients")
    if not header:
        return found
    listed = [a for a in (normalise_address(p) for p in header.split(",")) if a]
    result = list(found or [])
    if len(result) >= len(listed):
        return result or None
    known = {f.recipient for f in result}
    for addr in listed:
        if addr in known:
            continue
        diagnostic = result[0].diagnostic if len(result) == 1 else _report_summary(mail.text)
        result.append(
            Found(
                recipient=addr,
                diagnostic=diagnostic,
                status=find_status(diagnostic),
                reply_code=find_reply_code(diagnostic),
                action=delay_action(mail, diagnostic),
            )
        )
    return result or None


def _report_summary(text: str, limit: int = 600) -> str:
    return " ".join(text.split())[:limit]
