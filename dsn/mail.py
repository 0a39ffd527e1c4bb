"""Reading a message into the pieces the parsers look at.

Line endings are normalised first (CRLF and CR-only files become LF: Sisimai reads nothing
from CR-only files, we must), then ``arf.mime`` reads the MIME tree (bounded in depth and
parts, linear in size; the complaint parser reads through it too).  The tree is walked once:

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

from arf.mime import cut_at_line, headers_only, parse_message

__all__ = [
    "Mail",
    "decode_payload",
    "header_text",
    "headers_only",
    "normalise_line_endings",
    "parse_message",
    "read_mail",
]

TEXT_LIMIT: Final = 64 * 1024
# Longer header values are not RFC 2047-decoded: the standard library's decoder takes time
# quadratic in the number of encoded words (a 1 MB header of them: ~20 s).  Addresses in
# angle brackets are read all the same; only display names and subjects stay encoded.
ENCODED_HEADER_MAX: Final = 16 * 1024
# Totals over all the parts of a message.  The status fields of MAX_RECIPIENTS recipients fit
# in half a megabyte, and no human-readable report comes near a quarter; the parsers' cost is
# linear in what they read, so what lies beyond is not read (a 10 MB message of status lines
# took seconds).
STATUS_TOTAL_LIMIT: Final = 512 * 1024
TEXT_TOTAL_LIMIT: Final = 4 * TEXT_LIMIT
_HEADERS_LIMIT: Final = 32 * 1024
MAX_PARTS: Final = 64

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
    if "=?" in text and len(text) <= ENCODED_HEADER_MAX:
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
        return cut_at_line(raw, limit) if isinstance(raw, str) else ""
    if not isinstance(payload, bytes):
        return ""
    payload = normalise_line_endings(payload)
    if len(payload) > limit:  # between lines, else words, as arf.mime.cut_at_line explains
        cut = payload.rfind(b"\n", 0, limit)
        if cut < 0:
            cut = max(payload.rfind(b" ", 0, limit), payload.rfind(b"\t", 0, limit))
        payload = payload[: cut + 1]
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
    delay_warning: bool | None = None  # the report says delivery is still tried (lazy)

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
            return decode_payload(part, STATUS_TOTAL_LIMIT)
        return cut_at_line(payload, STATUS_TOTAL_LIMIT)
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
    return headers_only(cut_at_line(stripped, _HEADERS_LIMIT))


def _within(texts: list[str], limit: int) -> list[str]:
    """The texts, in order, up to ``limit`` characters in all."""
    kept: list[str] = []
    for text in texts:
        if limit <= 0:
            break
        kept.append(cut_at_line(text, limit))
        limit -= len(text)
    return kept


def read_mail(raw: bytes) -> Mail:
    """Parse normalised bytes into a ``Mail``."""
    msg = parse_message(raw)
    walker = _Walker()
    walker.walk(msg)
    texts = _within(walker.plain or walker.html, TEXT_TOTAL_LIMIT)
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
        status_texts=_within(walker.status, STATUS_TOTAL_LIMIT),
        original=original,
        original_text=original_text,
        content_type=msg.get_content_type(),
        has_report=walker.has_report,
    )
