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
import email
import email.parser
import email.policy
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message
from typing import Final

__all__ = ["Mail", "decode_payload", "header_text", "normalise_line_endings", "read_mail"]

TEXT_LIMIT: Final = 64 * 1024
_HEADERS_LIMIT: Final = 32 * 1024
_HEADERS_ONLY: Final = email.parser.Parser(policy=email.policy.compat32)
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
                self.original = _HEADERS_ONLY.parsestr(
                    decode_payload(part, _HEADERS_LIMIT).lstrip(), headersonly=True
                )
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
                self.original = _HEADERS_ONLY.parsestr(text.lstrip(), headersonly=True)
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
    return _HEADERS_ONLY.parsestr(stripped[:_HEADERS_LIMIT], headersonly=True)


def read_mail(raw: bytes) -> Mail:
    """Parse normalised bytes into a ``Mail``."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
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
