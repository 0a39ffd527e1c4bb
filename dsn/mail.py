"""Reading a message into the pieces the parsers look at.

Line endings are normalised first (CRLF and CR-only files become LF: Sisimai reads nothing
from CR-only files, we must), then ``arf.mime`` reads the MIME tree (bounded in depth and
parts, linear in size; the complaint parser reads through it too).  The tree is walked once:

* ``message/delivery-status`` parts (RFC 3464 §2.1) become ``status_texts``;
* ``text/plain`` parts become the human-readable ``text`` (``text/html`` only when there is
  no plain text), bounded to ``TEXT_LIMIT`` characters each so giant messages cost little;
* the returned original (``message/rfc822``, ``text/rfc822-headers``, or inline text after a
  "copy of the message follows" line) becomes ``original``.

Text is decoded by ``decode_text``, which never raises: bounces arrive labelled with charsets
Python does not know (``unknown-8bit``, ``x-unknown``), with codecs that are not text
encodings (``idna``), mislabelled (UTF-8 sent as ``us-ascii`` or ``iso-8859-1``, ISO-2022-JP
sent as ``us-ascii``), or in the vendor supersets of the Asian charsets they name (Windows'
Shift_JIS with NEC symbols, GBK text labelled GB2312, HKSCS text labelled Big5): each label is
read as the widest charset it stands for, and what still fails is decoded with replacement
characters, which keep every ASCII byte, so addresses and reply codes are always read.

A report wrapped inside a ``message/rfc822`` part (forwarded bounces) is walked into, not
taken for the original.
"""

from __future__ import annotations

import codecs
import contextlib
import re
from dataclasses import dataclass, field
from email.errors import MessageError
from email.header import Header, decode_header, make_header
from email.message import Message
from typing import Final

from arf.mime import cut_at_line, headers_only, parse_message

__all__ = [
    "Mail",
    "decode_payload",
    "decode_text",
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


# A label -> the charsets to try, widest first (each a superset of what the label names in
# practice: CP932 is what Windows mailers send as Shift_JIS, GB18030 contains GBK and GB2312).
_CHARSET_READINGS: Final[dict[str, tuple[str, ...]]] = {
    "iso-2022-jp": ("iso2022_jp", "iso2022_jp_ext", "iso2022_jp_2004", "iso2022_jp_2"),
    "shift_jis": ("cp932", "shift_jis_2004"),
    "euc-jp": ("euc_jp", "euc_jis_2004"),
    "gb2312": ("gb18030",),
    "big5": ("big5hkscs", "cp950"),
    "euc-kr": ("cp949",),
    "iso-8859-8-i": ("iso-8859-8",),
    "iso-8859-6-i": ("iso-8859-6",),
}
# Spellings of those labels seen in the wild, by their normalised name.
_CHARSET_SPELLINGS: Final[dict[str, str]] = {
    "csiso2022jp": "iso-2022-jp",
    "iso2022jp": "iso-2022-jp",
    "iso-2022-jp-1": "iso-2022-jp",
    "iso-2022-jp-2": "iso-2022-jp",
    "iso-2022-jp-3": "iso-2022-jp",
    "iso-2022-jp-2004": "iso-2022-jp",
    "shift-jis": "shift_jis",
    "sjis": "shift_jis",
    "x-sjis": "shift_jis",
    "ms_kanji": "shift_jis",
    "csshiftjis": "shift_jis",
    "windows-31j": "shift_jis",
    "cp932": "shift_jis",
    "x-euc-jp": "euc-jp",
    "eucjp": "euc-jp",
    "euc_jp": "euc-jp",
    "gbk": "gb2312",
    "x-gbk": "gb2312",
    "cp936": "gb2312",
    "euc-cn": "gb2312",
    "csgb2312": "gb2312",
    "gb_2312-80": "gb2312",
    "gb18030": "gb2312",
    "big5-hkscs": "big5",
    "x-x-big5": "big5",
    "cn-big5": "big5",
    "csbig5": "big5",
    "ks_c_5601-1987": "euc-kr",
    "ks_c_5601": "euc-kr",
    "ksc5601": "euc-kr",
    "korean": "euc-kr",
    "cp949": "euc-kr",
}
# Labels that say nothing about the bytes: read as UTF-8 when they are UTF-8, else Latin-1.
_UNSPECIFIC: Final = frozenset(
    {"", "unknown-8bit", "x-unknown", "unknown", "8bit", "default", "none", "x-user-defined"}
)
_ASCII_LABELS: Final = frozenset({"us-ascii", "ascii", "ansi_x3.4-1968", "iso646-us", "us"})
_LATIN_LABELS: Final = frozenset({"iso-8859-1", "latin1", "latin-1", "windows-1252", "cp1252"})
# Python codecs that accept a mail label but are no text encodings for it: ``idna`` and
# ``punycode`` raise on any error handler but "strict", the escape codecs interpret
# backslashes, and ``undefined`` always raises.
_NOT_MAIL_CODECS: Final = frozenset(
    {"idna", "punycode", "unicode-escape", "raw-unicode-escape", "undefined", "unicode_internal"}
)
_ISO2022_ESCAPE: Final = re.compile(rb"\x1b\$[@B]|\x1b\(J")


def _codec(name: str) -> str | None:
    """The Python codec for a label, or ``None`` when there is no usable one."""
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):
        return None
    if info.name in _NOT_MAIL_CODECS or not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def _readings(data: bytes, label: str) -> list[str]:
    """The codecs to try for ``data`` labelled ``label``, most likely first."""
    label = _CHARSET_SPELLINGS.get(label, label)
    if _ISO2022_ESCAPE.search(data) and (label in _UNSPECIFIC or label in _ASCII_LABELS):
        return list(_CHARSET_READINGS["iso-2022-jp"])  # ISO-2022-JP sent unlabelled or as ASCII
    if label in _UNSPECIFIC or label in _ASCII_LABELS or label in _LATIN_LABELS:
        # UTF-8 sent as ASCII or Latin-1 (strict UTF-8 almost never succeeds on real Latin-1
        # text), else the Windows Latin-1 every such label stands for in practice.  No CJK
        # guess here: a wrong double-byte charset would swallow the ASCII byte after a lead
        # byte ("@" is a valid Shift_JIS trail byte).
        return ["utf-8", "cp1252", "latin-1"]
    if label in _CHARSET_READINGS:
        return list(_CHARSET_READINGS[label])
    codec = _codec(label)
    if codec is None:
        return ["utf-8", "cp1252", "latin-1"]
    if codec.startswith(("utf-16", "utf-32")) and b"\x00" not in data:
        # No NUL byte: not UTF-16 or UTF-32, whatever the label says.
        return ["utf-8", "cp1252", "latin-1"]
    return [codec]


def decode_text(data: bytes, charset: str | None) -> str:
    """Bytes in a declared charset as text, never raising (see the module docstring)."""
    label = (charset or "").strip().strip("\"'").lower()
    readings = _readings(data, label)
    for codec in readings:
        with contextlib.suppress(UnicodeError, LookupError, ValueError, TypeError):
            return data.decode(codec)
    for codec in readings:
        with contextlib.suppress(UnicodeError, LookupError, ValueError, TypeError):
            return data.decode(codec, errors="replace")
    return data.decode("utf-8", errors="replace")


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
    if isinstance(value, Header):
        # Raw 8-bit bytes in a header (the parser keeps them as "unknown-8bit" chunks).
        text = _decoded_header(value)
    else:
        text = str(value)
        if "=?" in text and len(text) <= ENCODED_HEADER_MAX:
            text = _decoded_header(text)
    return " ".join(text.split())


def _decoded_header(value: str | Header) -> str:
    """RFC 2047 words (and raw 8-bit chunks) decoded with ``decode_text``; the value as it
    stands when it cannot be read."""
    try:
        chunks = decode_header(value)
    except (LookupError, ValueError, UnicodeError, AssertionError, TypeError, MessageError):
        # MessageError: HeaderParseError, e.g. a broken base64 encoded word.
        return str(value)
    readable: list[tuple[bytes | str, str | None]] = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            readable.append((chunk, charset))
        elif charset is None and chunk.isascii():
            readable.append((chunk, None))
        else:
            readable.append((decode_text(chunk, charset), "utf-8"))
    try:
        return str(make_header(readable))
    except (LookupError, ValueError, UnicodeError, AssertionError, TypeError):
        return "".join(
            c if isinstance(c, str) else c.decode("ascii", "replace") for c, _ in readable
        )


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
    try:
        charset = part.get_content_charset()
    except (LookupError, ValueError, UnicodeError, TypeError):
        charset = None
    return decode_text(payload, charset)


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
    receipt: bool = False  # an RFC 8098 message/disposition-notification part seen
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
        self.receipt = False
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
        if ctype == "message/disposition-notification":
            self.receipt = True
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
        receipt=walker.receipt,
    )
