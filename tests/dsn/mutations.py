"""Hypothesis strategies that damage real samples the ways mail arrives damaged or hostile.

Shared by the property tests of ``dsn`` and ``arf``.  Each operator takes a real message from
``samples/`` and breaks one thing a parser relies on: single bytes (flips, NUL, 8-bit), the
end (truncation), the header block (duplicated fields, junk RFC 2047 words, unknown charsets
and transfer encodings), the MIME structure (boundaries declared but never used, used but
never closed, stray delimiters, deep wrapping), line endings (CRLF, CR-only, mixed), and size
(one huge line, a header field of one long run, thousands of repeated lines, another sample
spliced in): the shapes that made parsers super-linear or recurse without bound.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from hypothesis import strategies as st
from hypothesis.strategies import DrawFn

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "samples"
ALL_SAMPLES = sorted(SAMPLES_DIR.rglob("*.eml"))
ARF_SAMPLES = sorted((SAMPLES_DIR / "arf").glob("*.eml"))

_BOUNDARY = re.compile(rb'boundary="?([^";\r\n]+)"?', re.I)
_HEADER_LINE = re.compile(rb"^[A-Za-z][A-Za-z0-9-]*:[^\n]*\n", re.M)
_CHARSET = re.compile(rb"charset=\"?[^\";\s]*\"?", re.I)
JUNK_CHARSETS = [b"x-unknown", b"utf-7", b"", b"\xff\xfe", b"unicode-1-1-utf-7", b"cp65001x", b'"']
JUNK_ENCODINGS = [b"base64", b"quoted-printable", b"x-uuencode", b"8bit", b"bogus"]
JUNK_WORDS = [
    b"=?utf-8?b?!!!?=",
    b"=?x-unknown?q?=ZZ=?=",
    b"=?utf-8?q?=C3?=",
    b"=?iso-2022-jp?b?GyRC?=",
    b"=?=?=?",
    b"=?utf-8*en?q?a?=",
]
LINE_TOKENS = [b"a", b" ", b"-", b"@", b"<", b"a@b.example ", b"550 5.1.1 ", b"=?", b"\xff", b";"]
# Runs inside one header value: address characters without "@", group and comment openers
# (email.utils recursion), parameters, encoded words.
HEADER_TOKENS = [b"!", b"*", b"a.", b"(", b":", b";", b",", b"<", b"=?utf-8?q?a?= ", b"\xff"]
HEADER_NAMES = [
    b"X-Failed-Recipients",
    b"Subject",
    b"To",
    b"From",
    b"Content-Type: multipart/mixed; boundary=x",
    b"Original-Rcpt-To",
]
# Lines repeated many times: blank lines (a ^\s* under re.M runs across all of them),
# folded continuations, header-like and transcript-like lines, delimiters.
MANY_LINES = [b"\n", b" \n", b"\t\n", b"a: b\n", b" x\n", b"---\n", b">>> \n", b"--x\n", b"-\n"]


def _line_starts(data: bytes) -> list[int]:
    return [0, *(m.end() for m in re.finditer(rb"\n", data))]


def _at_line(draw: DrawFn, data: bytes) -> int:
    starts = _line_starts(data)
    return starts[draw(st.integers(0, len(starts) - 1))]


def flip_bytes(draw: DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        if out:
            at = draw(st.integers(0, len(out) - 1))
            out[at] ^= draw(st.integers(1, 255))
    return bytes(out)


def truncate(draw: DrawFn, data: bytes) -> bytes:
    return data[: draw(st.integers(0, len(data)))]


def duplicate_header(draw: DrawFn, data: bytes) -> bytes:
    lines = list(_HEADER_LINE.finditer(data))
    if not lines:
        return data
    line = lines[draw(st.integers(0, len(lines) - 1))]
    copies = draw(st.sampled_from([1, 2, 5, 50, 2000]))
    return data[: line.end()] + line.group(0) * copies + data[line.end() :]


def corrupt_boundary(draw: DrawFn, data: bytes) -> bytes:
    found = _BOUNDARY.search(data)
    if found is None:
        return data
    boundary = found.group(1)
    how = draw(st.sampled_from(["rename", "unclosed", "stray", "empty", "early-close", "prefix"]))
    if how == "rename":
        return data[: found.start(1)] + b"x" + boundary + data[found.end(1) :]
    if how == "unclosed":
        return data.replace(b"--" + boundary + b"--", b"")
    if how == "empty":
        return data[: found.start(1)] + data[found.end(1) :]
    if how == "prefix":  # a boundary that is a prefix of every delimiter line
        return data[: found.start(1)] + boundary[:1] + data[found.end(1) :]
    at = _at_line(draw, data)
    line = b"--" + boundary + (b"--\n" if how == "early-close" else b"\n")
    return data[:at] + line + data[at:]


def charset_junk(draw: DrawFn, data: bytes) -> bytes:
    how = draw(st.sampled_from(["charset", "encoding", "word"]))
    if how == "charset":
        junk = draw(st.sampled_from(JUNK_CHARSETS))
        return _CHARSET.sub(b"charset=" + junk, data)
    at = _at_line(draw, data)
    if how == "encoding":
        cte = draw(st.sampled_from(JUNK_ENCODINGS))
        return data[:at] + b"Content-Transfer-Encoding: " + cte + b"\n" + data[at:]
    word = draw(st.sampled_from(JUNK_WORDS))
    name = draw(st.sampled_from([b"Subject: ", b"From: ", b"To: ", b"X-Stoplist-Stream: "]))
    return data[:at] + name + word + b"\n" + data[at:]


def huge_line(draw: DrawFn, data: bytes) -> bytes:
    token = draw(st.sampled_from(LINE_TOKENS))
    count = draw(st.sampled_from([100, 1000, 20_000]))
    at = _at_line(draw, data)
    return data[:at] + token * count + b"\n" + data[at:]


def header_run(draw: DrawFn, data: bytes) -> bytes:
    """A header field, first in the message, whose value is one long run of a token."""
    name = draw(st.sampled_from(HEADER_NAMES))
    token = draw(st.sampled_from(HEADER_TOKENS))
    count = draw(st.sampled_from([10, 1000, 20_000]))
    separator = b"" if b":" in name else b": "
    return name + separator + token * count + b"\n" + data


def many_lines(draw: DrawFn, data: bytes) -> bytes:
    line = draw(st.sampled_from(MANY_LINES))
    count = draw(st.sampled_from([10, 1000, 30_000]))
    at = _at_line(draw, data)
    return data[:at] + line * count + data[at:]


def line_endings(draw: DrawFn, data: bytes) -> bytes:
    how = draw(st.sampled_from(["crlf", "cr", "mixed"]))
    if how == "crlf":
        return data.replace(b"\n", b"\r\n")
    if how == "cr":
        return data.replace(b"\n", b"\r")
    lines = data.split(b"\n")
    ends = draw(st.lists(st.sampled_from([b"\n", b"\r\n", b"\r"]), min_size=1, max_size=8))
    return b"".join(line + ends[i % len(ends)] for i, line in enumerate(lines))


def splice(draw: DrawFn, data: bytes) -> bytes:
    other = ALL_SAMPLES[draw(st.integers(0, len(ALL_SAMPLES) - 1))].read_bytes()
    start = draw(st.integers(0, len(other)))
    chunk = other[start : start + draw(st.integers(1, 4000))]
    at = _at_line(draw, data)
    return data[:at] + chunk + data[at:]


def bad_bytes(draw: DrawFn, data: bytes) -> bytes:
    junk = draw(st.sampled_from([b"\x00", b"\x00" * 100, b"\xff\xfe", b"\x80\x81\x82", b"\x1b$B"]))
    at = draw(st.integers(0, len(data)))
    return data[:at] + junk + data[at:]


def wrap(draw: DrawFn, data: bytes) -> bytes:
    depth = draw(st.sampled_from([1, 3, 12, 1000]))
    kind = draw(st.sampled_from(["rfc822", "multipart"]))
    for level in range(depth):
        if kind == "rfc822":
            data = b"Content-Type: message/rfc822\n\n" + data
        else:
            b = b"w%d" % level
            data = (
                b"Content-Type: multipart/mixed; boundary="
                + b
                + b"\n\n--"
                + b
                + b"\n"
                + data
                + b"\n--"
                + b
                + b"--\n"
            )
    return data


MUTATIONS: dict[str, Callable[[DrawFn, bytes], bytes]] = {
    "flip": flip_bytes,
    "truncate": truncate,
    "duplicate-header": duplicate_header,
    "corrupt-boundary": corrupt_boundary,
    "charset-junk": charset_junk,
    "huge-line": huge_line,
    "header-run": header_run,
    "many-lines": many_lines,
    "line-endings": line_endings,
    "splice": splice,
    "bad-bytes": bad_bytes,
    "wrap": wrap,
}


@st.composite
def mutated_samples(draw: DrawFn, samples: list[Path] = ALL_SAMPLES, max_ops: int = 4) -> bytes:
    """A real sample with one to ``max_ops`` mutations applied in turn."""
    path = samples[draw(st.integers(0, len(samples) - 1))]
    data = path.read_bytes()
    names = draw(st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=1, max_size=max_ops))
    for name in names:
        data = MUTATIONS[name](draw, data)
    return data
