"""CSV in and out: bytes (gzip by header or magic, a multipart upload unwrapped on the fly) ->
an incremental UTF-8 decoder (BOM dropped, bad bytes flagged per row) -> records; and the cell
format both directions share (timestamps, the ``'`` that defuses spreadsheet formulas).
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import re
import zlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from app.errors import InvalidInput

COLUMNS = ("address", "outcome", "reason", "stream", "expires_at", "created_at", "note")


HASHED_COLUMNS = ("address_sha256", *COLUMNS[1:])
MAX_NOTE = 2000
GZIP_MAGIC = b"\x1f\x8b"
_INFLATE_CHUNK = 1 << 20


# A formula trigger, possibly behind quotes we added before (so the prefix can be undone exactly).
_FORMULA_RE = re.compile(r"'*[=+\-@\t\r]")


_LINE_RE = re.compile(r"[^\n]*\n")


_HEADER_NAME_RE = re.compile(r"[^a-z0-9]+")


def neutralise(cell: str) -> str:
    """Prefix ``'`` to a cell a spreadsheet would evaluate (``=``, ``+``, ``-``, ``@``, tab, CR).

    A cell that already is ``'`` + such a cell gets one more ``'``, so :func:`unneutralise` is its
    exact inverse and an exported value always comes back as it was.
    """
    return "'" + cell if _FORMULA_RE.match(cell) else cell


def unneutralise(cell: str) -> str:
    if cell[:1] == "'" and _FORMULA_RE.match(cell, 1):
        return cell[1:]
    return cell


def format_time(value: datetime | None) -> str:
    """UTC, microseconds, ``Z``: the one timestamp format of exports (PostgreSQL writes the same)."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(raw: str) -> datetime:
    """ISO 8601 (``Z``, offsets, a space for ``T``, a bare date), epoch seconds or milliseconds,
    or an RFC 5322 date (Mailgun). Naive times are UTC. Raises ValueError."""
    value = raw.strip()
    if value.isdigit():
        number = int(value)
        return datetime.fromtimestamp(number / 1000 if len(value) >= 13 else number, UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            raise ValueError(value) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def header_key(name: str) -> str:
    """``"Email Address"``, ``email-address`` and ``EMAIL_ADDRESS`` are all ``email_address``."""
    return _HEADER_NAME_RE.sub("_", name.strip().lstrip("\ufeff").lower()).strip("_")


class InvalidFile(InvalidInput):
    """The upload itself cannot be read as a list: empty, not gzip, not a multipart file, or a CSV
    without an address column (``invalid_file``; bad options are ``invalid_input``)."""

    error = "invalid_file"


class RowError(Exception):
    """One invalid row: ``value`` is the offending cell, ``why`` says what is wrong with it."""

    def __init__(self, value: str, why: str) -> None:
        super().__init__(why)
        self.value = value
        self.why = why


async def _prepend(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if head:
        yield head
    async for chunk in rest:
        yield chunk


async def non_empty(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``chunks`` unchanged, once it has yielded a byte; 422 when the body is empty (an upload
    that sent nothing is a mistake, not a file of no rows)."""
    async for head in chunks:
        if head:
            return _prepend(head, chunks)
    raise InvalidFile("the body is empty: send the CSV file")


async def gunzip_if_needed(
    chunks: AsyncIterator[bytes], *, force: bool = False
) -> AsyncIterator[bytes]:
    """Inflate gzip (declared, or recognised by its magic bytes); pass anything else through.

    Output comes in slices of at most 1 MiB, so a small compressed body cannot blow up memory;
    concatenated gzip members (``cat a.gz b.gz``) are read one after the other."""
    head = b""
    async for chunk in chunks:
        head += chunk
        if len(head) >= 2:
            break
    source = _prepend(head, chunks)
    if not (force or head[:2] == GZIP_MAGIC):
        async for chunk in source:
            yield chunk
        return
    inflater = zlib.decompressobj(wbits=31)
    fed = False
    try:
        async for chunk in source:
            data = chunk
            while data:
                fed = True
                out = inflater.decompress(data, _INFLATE_CHUNK)
                if out:
                    yield out
                data = inflater.unconsumed_tail
                if inflater.eof:
                    rest = inflater.unused_data + data
                    if not rest.strip(b"\x00"):  # zero padding after the last member
                        data = b""
                        continue
                    inflater = zlib.decompressobj(wbits=31)
                    fed = False
                    data = rest
        tail = inflater.flush()
        if tail:
            yield tail
    except zlib.error as exc:
        raise InvalidFile(f"the body is not valid gzip: {exc}") from None
    if fed and not inflater.eof:
        raise InvalidFile("the gzip stream is truncated")


async def multipart_file(chunks: AsyncIterator[bytes], boundary: bytes) -> AsyncIterator[bytes]:
    """The content of the first file part of a ``multipart/form-data`` body (RFC 7578), streamed.

    Parts without a filename are skipped unless they are named ``file``."""
    delimiter = b"--" + boundary
    closing = b"\r\n" + delimiter
    buf = bytearray()
    it = chunks.__aiter__()

    async def more() -> bool:
        try:
            buf.extend(await it.__anext__())
        except StopAsyncIteration:
            return False
        return True

    # preamble up to the first delimiter
    while (at := buf.find(delimiter)) < 0:
        if len(buf) > 65536 or not await more():
            raise InvalidFile("multipart body without the boundary named in Content-Type")
    del buf[: at + len(delimiter)]
    while True:
        while len(buf) < 2:
            if not await more():
                raise InvalidFile("multipart body ends early")
        if buf[:2] == b"--":
            raise InvalidInput("multipart body has no file part (use a field named 'file')")
        while (end := buf.find(b"\r\n\r\n")) < 0:
            if len(buf) > 16384 or not await more():
                raise InvalidFile("multipart part headers are missing or too long")
        headers = bytes(buf[:end]).decode("latin-1").lower()
        del buf[: end + 4]
        wanted = "filename=" in headers or re.search(r'name="?file"?(;|\s|$)', headers) is not None
        while True:
            at = buf.find(closing)
            if at >= 0:
                if wanted:
                    if at:
                        yield bytes(buf[:at])
                    return
                del buf[: at + len(closing)]
                break
            keep = len(closing) - 1
            if len(buf) > keep:
                if wanted:
                    yield bytes(buf[:-keep])
                del buf[:-keep]
            if not await more():
                raise InvalidFile("multipart body ends inside a part")


def request_body(
    chunks: AsyncIterator[bytes], content_type: str | None, content_encoding: str | None
) -> AsyncIterator[bytes]:
    """The CSV bytes of an upload: ``text/csv`` (or any other type) as is, multipart unwrapped,
    gzip inflated when declared or recognised."""
    ctype = (content_type or "").lower()
    source = chunks
    if ctype.startswith("multipart/"):
        found = re.search(r'boundary="?([^";]+)"?', content_type or "", re.IGNORECASE)
        if not found:
            raise InvalidInput("multipart Content-Type without a boundary")
        source = multipart_file(chunks, found.group(1).encode("latin-1"))
    encoding = (content_encoding or "").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip"):
        raise InvalidInput(f"Content-Encoding {content_encoding!r}: only gzip is accepted")
    return gunzip_if_needed(source, force=encoding in ("gzip", "x-gzip"))


class CsvRecords:
    """Incremental CSV parsing: push bytes, get ``(first physical line, fields)`` per record.

    Handles a UTF-8 BOM, CRLF, quoted fields with delimiters and line breaks, Excel's ``sep=;``
    line and ``;``/tab delimiters (sniffed from the first line). Bytes that are not UTF-8 become
    U+FFFD so the row can be reported instead of failing the whole file. A record the csv module
    refuses (a NUL, a field over its size limit) comes back with a message instead of fields.

    Each push parses its complete lines with ``csv.reader`` at C speed; the last record read is
    held back (a chunk may end inside a quoted field) and parsed again with the next push."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._carry = ""
        self._started = False
        self.delimiter = ","
        self.line = 0  # physical lines before the carried text

    def push(self, data: bytes, *, final: bool = False) -> list[tuple[int, list[str] | str]]:
        text_ = self._carry + self._decoder.decode(data, final)
        if not self._started:
            if "\n" not in text_ and not final:
                self._carry = text_
                return []
            text_ = self._start(text_)
        cut = len(text_) if final else text_.rfind("\n") + 1
        tail = text_[cut:]
        lines = _LINE_RE.findall(text_, 0, cut)
        if final and cut and not text_.endswith("\n"):
            lines.append(text_[text_.rfind("\n") + 1 :])
        out, held = self._parse(lines, final)
        self._carry = "".join(lines[held:]) + tail if held < len(lines) else tail
        return out

    def _start(self, text_: str) -> str:
        self._started = True
        first = text_.split("\n", 1)[0].rstrip("\r")
        if first.lower().startswith("sep=") and len(first) == 5:
            self.delimiter = first[4]
            self.line = 1
            return text_.split("\n", 1)[1] if "\n" in text_ else ""
        unquoted = re.sub(r'"[^"]*"', "", first)
        counts = {d: unquoted.count(d) for d in (",", ";", "\t", "|")}
        best = max(counts, key=lambda d: counts[d])
        self.delimiter = best if counts[best] > counts[","] else ","
        return text_

    def _parse(
        self, lines: list[str], final: bool
    ) -> tuple[list[tuple[int, list[str] | str]], int]:
        """Records of ``lines`` and the index of the first line not consumed for good."""
        out: list[tuple[int, list[str] | str]] = []
        append = out.append
        reader = csv.reader(iter(lines), delimiter=self.delimiter, strict=False)
        base = self.line + 1
        before = 0  # lines consumed before the current record
        last = 0  # where the last record read started
        while True:
            try:
                for fields in reader:
                    last = before
                    append((base + before, fields))
                    before = reader.line_num
                break
            except csv.Error as exc:
                last = before
                append((base + before, f"unreadable CSV: {exc}"))
                before = reader.line_num
        if not final and out:
            out.pop()  # may be cut short by the end of the chunk: read it again next time
            held = last
        else:
            held = before
        self.line += held
        return [r for r in out if r[1]], held


async def file_chunks(
    path: str, *, chunk_size: int = 1 << 16, on_read: Callable[[int], None] | None = None
) -> AsyncIterator[bytes]:
    """A local file in chunks (the CLI's source); ``on_read`` gets the bytes read so far."""
    done = 0
    with open(path, "rb") as handle:  # noqa: ASYNC230 - local file, 1 MiB reads
        while data := handle.read(chunk_size):
            done += len(data)
            if on_read is not None:
                on_read(done)
            yield data
            await asyncio.sleep(0)


def header_line(hashed: bool) -> bytes:
    return (",".join(HASHED_COLUMNS if hashed else COLUMNS) + "\n").encode()


def csv_cell(value: str) -> str:
    # Quote exactly when PostgreSQL's COPY … CSV does, so both backends write the same bytes.
    if "," in value or '"' in value or "\n" in value or "\r" in value:
        return '"' + value.replace('"', '""') + '"'
    return value
