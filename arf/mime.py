"""A bounded MIME reader: raw bytes -> a compat32 ``email.message.Message`` tree.

Both pure parsers read mail through it (``dsn`` for bounces, ``arf.parse_bytes`` for
complaints), so they see the same tree.  Only header blocks go through a line parser; bodies
are split on their boundaries (RFC 2046 §5.1.1) with string searches and leaf bodies stay
strings (bytes as ASCII with surrogate escapes, as ``email.message_from_bytes`` keeps them).

Why not ``email.message_from_bytes``: the standard library's feed parser recurses once per
nesting level (a thousand nested multiparts end in ``RecursionError``, after seconds of
re-checking every line against every open boundary), and it builds every part of a message
with a hundred thousand tiny parts.  Here nesting stops at ``MAX_DEPTH`` and a multipart
keeps its first ``MAX_PARTS`` parts; what is below or after stays unparsed text.  A header
block keeps its first ``MAX_HEADERS`` fields, and parameter-bearing fields are cut short, so
that the email package's own lookups stay cheap.  Every step is linear in the size of the
message.
"""

from __future__ import annotations

import re
from email.message import Message
from typing import Final

__all__ = [
    "FIELD_MAX",
    "MAX_DEPTH",
    "MAX_HEADERS",
    "MAX_PARTS",
    "cut_at_line",
    "headers_only",
    "parse_message",
]

MAX_DEPTH: Final = 10
MAX_PARTS: Final = 256


def cut_at_line(text: str, limit: int) -> str:
    """At most ``limit`` characters of ``text``, cut after a line break, else after a space.

    Every bound on text read is cut this way: a cut inside a word can leave a shorter, real
    looking address ("jane@example.co" from "jane@example.com") for a parser to act on.  A
    single line longer than the bound (minified HTML) is cut between words; a single word
    longer than the bound is dropped.
    """
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit)
    if cut < 0:
        cut = max(text.rfind(" ", 0, limit), text.rfind("\t", 0, limit))
    return text[: cut + 1]


# message/* bodies kept as text: status fields and header blocks are read as text anyway.
_MESSAGE_AS_TEXT: Final = frozenset(
    {
        "message/delivery-status",
        "message/global-delivery-status",
        "message/rfc822-headers",
        "message/global-headers",
    }
)


def _split_head(source: str, start: int, end: int) -> tuple[int, int]:
    """Where the header block of ``source[start:end]`` ends and its body starts: the body
    starts after the first empty line."""
    if source.startswith("\n", start, end):
        return start, start + 1
    blank = source.find("\n\n", start, end)
    if blank < 0:
        return end, end
    return blank + 1, blank + 2


# The rest of a delimiter line after "--boundary": "--" when it closes, then only blanks.
_DELIMITER_REST: Final = re.compile(r"(--)?[ \t]*(?:\n|\Z)")


def _boundary_lines(
    source: str, start: int, end: int, boundary: str
) -> list[tuple[int, int, bool]]:
    """``(start, end, closing)`` of each delimiter line ``--boundary[--][ \\t]*`` (RFC 2046
    §5.1.1) in ``source[start:end]``, ``start`` including the line break before it, which
    belongs to the delimiter; no more than the ``MAX_PARTS + 1`` that end the parts kept."""
    sep = "--" + boundary
    found: list[tuple[int, int, bool]] = []
    if source.startswith(sep, start, end):
        at, begin = start, start
    else:
        at = source.find("\n" + sep, start, end)
        begin = at + 1
    while at >= 0 and len(found) <= MAX_PARTS:
        rest = _DELIMITER_REST.match(source, begin + len(sep), end)
        if rest is not None:
            closing = rest.group(1) is not None
            found.append((at, rest.end(), closing))
            if closing or rest.end() >= end:
                break
        at = source.find("\n" + sep, begin + len(sep), end)
        begin = at + 1
    return found


_HEADER_START: Final = re.compile(r"[\041-\071\073-\176]*:")
# Fields kept per header block: real mail has dozens, and every lookup in a compat32 Message
# scans all of them (a block of 200,000 fields made the analysis's few dozen lookups take
# seconds).  The rest of a longer block is dropped.
MAX_HEADERS: Final = 1000
# Lines of one header block read, at most: a thousand fields folded over a few lines each.
_MAX_HEADER_LINES: Final = 20 * MAX_HEADERS
# A field value is cut to FIELD_MAX characters (Postfix's header_size_limit: 102,400), at a
# comma or a space so that no address is cut short.  Content-Type and Content-Disposition are
# cut to far less: the email package parses parameters in time quadratic in their number
# (1 MB of ";" took 50 s), and no real value comes near it.
FIELD_MAX: Final = 100 * 1024
_PARAMETERS_MAX: Final = 4 * 1024
_PARAMETER_FIELDS: Final = frozenset({"content-type", "content-disposition"})


def _set_field(msg: Message, name: str, lines: list[str]) -> None:
    value = lines[0] if len(lines) == 1 else "\n".join(lines)
    if len(value) <= _PARAMETERS_MAX:
        pass  # the common case, first: this runs for every header field of every message
    elif name.lower() in _PARAMETER_FIELDS:
        value = value[:_PARAMETERS_MAX]
    elif len(value) > FIELD_MAX:
        cut = max(value.rfind(separator, 0, FIELD_MAX) for separator in ", \t\n")
        value = value[:cut].rstrip(", \t\n") if cut > 0 else ""
    msg.set_raw(name, value)


def _parse_headers(source: str, start: int, end: int) -> tuple[Message, int]:
    """The header block ``source[start:end]`` as compat32's feed parser reads it (names and
    folded values kept as written), and where the first line that is no header starts (the
    body starts there), or -1.

    At most ``_MAX_HEADER_LINES`` lines are read (a block of millions of short lines would
    make as many strings), and a folded value keeps only what ``FIELD_MAX`` keeps.
    """
    msg = Message()
    name: str | None = None
    value: list[str] = []
    size = 0
    fields = 0
    lines = source[start:end].split("\n", _MAX_HEADER_LINES)
    if len(lines) > _MAX_HEADER_LINES or (lines and lines[-1] == ""):
        lines.pop()  # the unread rest of a giant block, or the empty string after the last \n
    at = start
    for number, line in enumerate(lines):
        line_at = at
        at += len(line) + 1
        if line[:1] in (" ", "\t"):
            if name is not None and size <= FIELD_MAX:
                value.append(line)
                size += len(line) + 1
            continue  # a continuation with nothing to continue is dropped
        if name is not None:
            _set_field(msg, name, value)
            name = None
            fields += 1
            if fields >= MAX_HEADERS:
                return msg, -1
        if line.startswith("From "):
            if number == 0:
                msg.set_unixfrom(line)
                continue
            if number == len(lines) - 1:
                return msg, line_at
            continue
        if not _HEADER_START.match(line):
            return msg, line_at
        colon = line.find(":")
        if colon == 0:
            continue
        name, first = line[:colon], line[colon + 1 :].lstrip(" \t")
        value = [first]
        size = len(first)
    if name is not None:
        _set_field(msg, name, value)
    return msg, -1


def headers_only(text: str) -> Message:
    """The header block at the start of ``text`` (a returned original's headers)."""
    head_end, _ = _split_head(text, 0, len(text))
    msg, _ = _parse_headers(text, 0, head_end)
    return msg


def _parse_part(source: str, start: int, end: int, depth: int = 0) -> Message:
    """The MIME entity ``source[start:end]`` as compat32 would parse it, but only the headers
    go through a line parser: bodies are split on their boundaries with string searches, and
    leaf bodies are kept as strings.  (The full parse of every returned original and its
    attachments cost more than all the analysis together.)  Parts are passed down as offsets
    into the one decoded message, so nesting copies nothing: only leaf bodies and header
    blocks are cut out of it, and they do not overlap."""
    head_end, body_start = _split_head(source, start, end)
    msg, spill = _parse_headers(source, start, head_end)
    if spill >= 0:  # a line that is no header ended the header block early: it is body
        body_start = spill
    ctype = msg.get_content_type()
    if depth < MAX_DEPTH and ctype.startswith("multipart/"):
        boundary = msg.get_boundary()
        lines = _boundary_lines(source, body_start, end, boundary) if boundary else []
        if lines:
            parts: list[Message | str] = []
            for (_, part_start, closing), following in zip(lines, [*lines[1:], None], strict=True):
                if closing or len(parts) >= MAX_PARTS:
                    break
                part_end = following[0] if following is not None else end
                part = _parse_part(source, part_start, part_end, depth + 1)
                if ctype == "multipart/digest" and part.get("Content-Type") is None:
                    part.set_default_type("message/rfc822")
                parts.append(part)
            msg.set_payload(parts)
            return msg
    elif depth < MAX_DEPTH and ctype.startswith("message/") and ctype not in _MESSAGE_AS_TEXT:
        msg.set_payload([_parse_part(source, body_start, end, depth + 1)])
        return msg
    msg.set_payload(source[body_start:end])
    return msg


def parse_message(raw: bytes) -> Message:
    """The compat32 ``Message`` tree of a message (see ``_parse_part``)."""
    source = raw.decode("ascii", "surrogateescape")
    return _parse_part(source, 0, len(source))
