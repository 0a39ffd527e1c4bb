"""Reading a message into the pieces the parsers look at.

Line endings are normalised first (CRLF and CR-only files become LF: Sisimai reads nothing
from CR-only files, we must).  The MIME tree is walked once:

* ``message/delivery-status`` parts (RFC 3464 §2.1) become ``status_texts``;
* ``text/plain`` parts become the human-readable ``text`` (``text/html`` only when there is
  no plain text), bounded to ``TEXT_LIMIT`` characters each so giant messages cost little;
* the returned original (``message/rfc822``, ``text/rfc822-headers``, or inline text after a
  "copy of the message follows" line) becomes ``original``.

A report wrapped inside a ``message/rfc822`` part (forwarded bounces) is walked into, not
taken for the original.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message
from typing import Final

__all__ = ["Mail", "decode_payload", "header_text", "normalise_line_endings", "read_mail"]

TEXT_LIMIT: Final = 64 * 1024
_HEADERS_LIMIT: Final = 32 * 1024
MAX_PARTS: Final = 64
_MAX_MIME_PARTS: Final = 256
_MAX_DEPTH: Final = 10
# message/* bodies kept as text: status fields and header blocks are read as text anyway.
_MESSAGE_AS_TEXT: Final = frozenset(
    {
        "message/delivery-status",
        "message/global-delivery-status",
        "message/rfc822-headers",
        "message/global-headers",
    }
)

# A text part that is really a delivery-status part (some MTAs label it text/plain).
_STATUS_LIKE = re.compile(r"^(?:final-recipient|original-recipient)\s*:", re.I | re.M)
_HTML_TAG = re.compile(r"<(?:br|/p|/div|/tr|/li|p|div|tr)\b[^>]*>", re.I)
_ANY_TAG = re.compile(r"<[^>]*>")
_ENTITIES: Final = {"&lt;": "<", "&gt;": ">", "&amp;": "&", "&nbsp;": " ", "&quot;": '"'}
_ENTITY = re.compile(r"&(?:lt|gt|amp|nbsp|quot);")

# Lines after which an MTA pastes the original message (or its headers) inline, only
# decoration (dashes, stars, ...) before the phrase.  Searched in the lower-cased text: a
# case-insensitive search here cost more than everything else in the analysis together.
_ORIGINAL_PHRASES = (
    r"(?:this is a |below this line is a )?copy of (?:the |your )?(?:original )?message"
    r"|original message(?: follows| header| headers)?|returned message"
    r"|unsent message (?:below|follows)|message headers follow"
    r"|(?:the )?headers? of (?:the |your )?original message|original mail header"
    r"|included is a copy|text of returned message|message text follows|returned mail follows"
)
_ORIGINAL_BOUNDARY = re.compile(rf"^[ \t\-=_*#]*(?:{_ORIGINAL_PHRASES})", re.M)
_HEADER_LINE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,60}:[ \t]", re.M)


def normalise_line_endings(raw: bytes) -> bytes:
    """CRLF and CR-only line endings become LF."""
    if b"\r" not in raw:
        return raw
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def header_text(msg: Message, name: str) -> str:
    """A header decoded from RFC 2047, unfolded; empty when missing or unreadable."""
    value = msg.get(name)
    if value is None:
        return ""
    text = str(value)
    if "=?" in text:
        with contextlib.suppress(LookupError, ValueError, UnicodeError, AssertionError):
            text = str(make_header(decode_header(text)))
    return " ".join(text.split())


def decode_payload(part: Message, limit: int = TEXT_LIMIT) -> str:
    """A leaf part's text, transfer-decoded and charset-decoded, never raising."""
    try:
        payload = part.get_payload(decode=True)
    except (ValueError, AssertionError, LookupError):
        payload = None
    if payload is None:
        raw = part.get_payload()
        return raw[:limit] if isinstance(raw, str) else ""
    if not isinstance(payload, bytes):
        return ""
    payload = normalise_line_endings(payload[:limit])
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("latin-1")


def _html_to_text(html: str) -> str:
    text = _HTML_TAG.sub("\n", html)
    text = _ANY_TAG.sub("", text)
    return _ENTITY.sub(lambda m: _ENTITIES[m.group(0)], text)


@dataclass(slots=True)
class Mail:
    """One message, ready for the parsers."""

    message: Message
    subject: str
    sender: str  # the From header, lower-cased
    text: str  # the human-readable report, without the inline original
    status_texts: list[str] = field(default_factory=list)
    original: Message | None = None
    original_text: str = ""  # the inline original, when there was no MIME part for it
    content_type: str = ""
    has_report: bool = False  # multipart/report seen

    def header(self, name: str) -> str:
        return header_text(self.message, name)


def _contains_report(msg: Message) -> bool:
    for count, part in enumerate(msg.walk()):
        if count >= MAX_PARTS:
            return False
        ctype = part.get_content_type()
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            return True
        if ctype == "multipart/report":
            return True
    return False


def _status_block_text(part: Message) -> str:
    payload = part.get_payload()
    if isinstance(payload, str):
        cte = str(part.get("Content-Transfer-Encoding", "")).lower()
        if cte in ("base64", "quoted-printable"):
            return decode_payload(part)
        return payload
    blocks: list[str] = []
    if isinstance(payload, list):
        for block in payload:
            if isinstance(block, Message):
                lines = [f"{k}: {v}" for k, v in block.items()]
                body = block.get_payload()
                if isinstance(body, str) and body.strip():
                    lines.append(body)
                blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


class _Walker:
    def __init__(self) -> None:
        self.plain: list[str] = []
        self.html: list[str] = []
        self.status: list[str] = []
        self.original: Message | None = None
        self.has_report = False
        self.count = 0

    def walk(self, part: Message, depth: int = 0) -> None:
        self.count += 1
        if self.count > MAX_PARTS or depth > 8:
            return
        ctype = part.get_content_type()
        if ctype == "multipart/report":
            self.has_report = True
        if part.is_multipart() and ctype.startswith("multipart/"):
            payload = part.get_payload()
            if isinstance(payload, list):
                for sub in payload:
                    if isinstance(sub, Message):
                        self.walk(sub, depth + 1)
            return
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            self.status.append(_status_block_text(part))
            return
        if ctype in ("message/rfc822", "message/global", "message/partial"):
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            if isinstance(inner, Message):
                if not self.status and _contains_report(inner):
                    self.walk(inner, depth + 1)
                elif self.original is None:
                    self.original = inner
            return
        if ctype in ("text/rfc822-headers", "message/rfc822-headers", "message/global-headers"):
            if self.original is None:
                self.original = headers_only(decode_payload(part, _HEADERS_LIMIT).lstrip())
            return
        maintype = part.get_content_maintype()
        if ctype == "text/html":
            self.html.append(_html_to_text(decode_payload(part)))
            return
        if maintype in ("text", "multipart") or ctype in ("application/json", "text/json"):
            # text/* and a multipart whose boundary never appears (then it is one text body)
            text = decode_payload(part)
            if self.status and self.original is None and _HEADER_LINE.match(text.lstrip()):
                # Text after the status part that starts with header lines: an original
                # pasted as text/plain (seen from several MTAs).
                self.original = headers_only(text.lstrip())
                return
            if _STATUS_LIKE.search(text) and not self.status:
                self.status.append(text)
            self.plain.append(text)


def split_original(text: str) -> tuple[str, str]:
    """Split a text body at the line after which the original message is pasted."""
    lowered = text.lower()
    if len(lowered) != len(text):  # a few characters change length when lower-cased
        lowered = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    match = _ORIGINAL_BOUNDARY.search(lowered)
    if match is None:
        return text, ""
    end = text.find("\n", match.end())
    if end < 0:
        return text[: match.start()], ""
    return text[: match.start()], text[end + 1 :]


def _parse_inline_original(text: str) -> Message | None:
    stripped = text.lstrip("\n")
    # Skip a few lines of prose between the boundary and the headers.
    for _ in range(6):
        if _HEADER_LINE.match(stripped):
            break
        nl = stripped.find("\n")
        if nl < 0:
            return None
        stripped = stripped[nl + 1 :].lstrip("\n")
    else:
        return None
    if not _HEADER_LINE.match(stripped):
        return None
    return headers_only(stripped[:_HEADERS_LIMIT])


def _split_head(text: str) -> tuple[str, str]:
    """The header block and the body: the body starts after the first empty line."""
    if text.startswith("\n"):
        return "", text[1:]
    end = text.find("\n\n")
    if end < 0:
        return text, ""
    return text[: end + 1], text[end + 2 :]


def _boundary_lines(body: str, boundary: str) -> list[tuple[int, int, bool]]:
    """``(start, end, closing)`` of each delimiter line ``--boundary[--][ \\t]*`` (RFC 2046
    §5.1.1), ``start`` including the line break before it, which belongs to the delimiter."""
    sep = "--" + boundary
    found: list[tuple[int, int, bool]] = []
    at = 0 if body.startswith(sep) else body.find("\n" + sep)
    while at >= 0:
        begin = at + (0 if at == 0 and body.startswith(sep) else 1)
        rest_at = begin + len(sep)
        eol = body.find("\n", rest_at)
        rest = body[rest_at : eol if eol >= 0 else len(body)]
        closing = rest.startswith("--")
        if not (rest[2:] if closing else rest).strip(" \t"):
            found.append((at, eol + 1 if eol >= 0 else len(body), closing))
            if closing or eol < 0:
                break
        at = body.find("\n" + sep, rest_at)
    return found


_HEADER_START: Final = re.compile(r"[\041-\071\073-\176]*:")


def _parse_headers(head: str) -> tuple[Message, str]:
    """A header block as compat32's feed parser reads it (names and folded values kept as
    written), and the text after the first line that is no header."""
    msg = Message()
    name: str | None = None
    value: list[str] = []
    lines = head.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines):
        if line[:1] in (" ", "\t"):
            if name is not None:
                value.append(line)
            continue  # a continuation with nothing to continue is dropped
        if name is not None:
            msg.set_raw(name, "\n".join(value))
            name = None
        if line.startswith("From "):
            if number == 0:
                msg.set_unixfrom(line)
                continue
            if number == len(lines) - 1:
                return msg, line
            continue
        if not _HEADER_START.match(line):
            return msg, "\n".join(lines[number:])
        colon = line.find(":")
        if colon == 0:
            continue
        name, first = line[:colon], line[colon + 1 :].lstrip(" \t")
        value = [first]
    if name is not None:
        msg.set_raw(name, "\n".join(value))
    return msg, ""


def headers_only(text: str) -> Message:
    """The header block at the start of ``text`` (a returned original's headers)."""
    msg, _ = _parse_headers(_split_head(text)[0])
    return msg


def _parse_part(text: str, depth: int = 0) -> Message:
    """One MIME entity as compat32 would parse it, but only the headers go through the
    email package's line-by-line parser: bodies are split on their boundaries with string
    searches, and leaf bodies are kept as strings.  (The full parse of every returned
    original and its attachments cost more than all the analysis together.)"""
    head, body = _split_head(text)
    msg, spill = _parse_headers(head)
    if spill:  # a line that is no header ended the header block early: it is body
        body = f"{spill}\n{body}" if body else spill
    ctype = msg.get_content_type()
    if depth < _MAX_DEPTH and ctype.startswith("multipart/"):
        boundary = msg.get_boundary()
        lines = _boundary_lines(body, boundary) if boundary else []
        if lines:
            parts: list[Message | str] = []
            for (_, start, closing), following in zip(lines, [*lines[1:], None], strict=True):
                if closing or len(parts) >= _MAX_MIME_PARTS:
                    break
                stop = following[0] if following is not None else len(body)
                part = _parse_part(body[start:stop], depth + 1)
                if ctype == "multipart/digest" and part.get("Content-Type") is None:
                    part.set_default_type("message/rfc822")
                parts.append(part)
            msg.set_payload(parts)
            return msg
    elif depth < _MAX_DEPTH and ctype.startswith("message/") and ctype not in _MESSAGE_AS_TEXT:
        msg.set_payload([_parse_part(body, depth + 1)])
        return msg
    msg.set_payload(body)
    return msg


def parse_message(raw: bytes) -> Message:
    """The compat32 ``Message`` tree of a message (see ``_parse_part``)."""
    return _parse_part(raw.decode("ascii", "surrogateescape"))


def read_mail(raw: bytes) -> Mail:
    """Parse normalised bytes into a ``Mail``."""
    msg = parse_message(raw)
    walker = _Walker()
    walker.walk(msg)
    texts = walker.plain or walker.html
    text = "\n".join(texts)
    report, inline = split_original(text)
    original = walker.original
    original_text = ""
    if original is None and inline:
        original = _parse_inline_original(inline)
        original_text = inline
    return Mail(
        message=msg,
        subject=header_text(msg, "Subject"),
        sender=header_text(msg, "From").lower(),
        text=report,
        status_texts=walker.status,
        original=original,
        original_text=original_text,
        content_type=msg.get_content_type(),
        has_report=walker.has_report,
    )
