"""Bulk import and export of the suppression list as CSV (see ``docs/bulk.md``).

Import is streamed end to end: bytes (gzip by header or magic, a multipart upload unwrapped on the
fly) -> an incremental UTF-8 decoder (BOM dropped, bad bytes flagged per row) -> ``csv.reader`` over
lines fed as they arrive -> validated rows, folded per (address, scope), in batches -> one set-based
upsert per batch. Nothing holds more than a few batches in memory. Parsing, two PostgreSQL writers
and the cache write-through run concurrently (``_import``).

The upsert states the no-weakening rule of :func:`app.suppression.merge.merge_into` in SQL: the stronger
outcome wins, permanence beats expiry, a removed or expired entry is replaced by a fresh one, and the
``WHERE`` of ``ON CONFLICT DO UPDATE`` leaves rows that would not change untouched, so importing a
file twice changes nothing the second time. On PostgreSQL rows arrive with ``COPY`` into a TEMP
staging table; on SQLite with ``executemany`` into the same shape of table.

Per-address advisory locks (``Database.write``) are not taken: a batch would need thousands, more
than the shared lock table holds. The row locks of ``ON CONFLICT`` serialise revisions per row, and
the cache is refreshed from a read after commit, so the cache's version rule still holds.

Export writes the columns the importer reads (``address,outcome,reason,stream,expires_at,
created_at,note``), so export -> import into an empty database -> export is byte-identical. Cells a
spreadsheet would run as a formula are prefixed with ``'``; the importer strips that prefix again.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import csv
import gc
import hashlib
import logging
import re
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from asyncpg.exceptions import DeadlockDetectedError as DeadlockError  # type: ignore[import-untyped]
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app import metrics
from app.addresses import InvalidAddress, normalise_address, try_normalise
from app.cache import (
    CachedEntry,
    CacheUnavailable,
)
from app.db import DB_ERRORS, Database
from app.errors import InvalidInput
from app.models import AuditEntry, Suppression, utcnow
from app.streams import GLOBAL_SCOPE, STREAM_RE
from app.suppression import (
    REASON_RE,
    SUPPRESSING_OUTCOMES,
    SuppressionFilter,
    SuppressionService,
    scope_for,
)
from app.suppression.merge import STRENGTH, active_sql, merge_set_sql, stronger_or_equal
from app.suppression.model import cache_items
from app.suppression.repository import CACHE_COLUMNS

log = logging.getLogger(__name__)

COLUMNS = ("address", "outcome", "reason", "stream", "expires_at", "created_at", "note")
HASHED_COLUMNS = ("address_sha256", *COLUMNS[1:])
BATCH_ROWS = 10_000
REFRESH_SLICE = 1_000  # addresses per cache write-through step (see _refresh)
PARSE_SLICE = 16 * 1024  # bytes of CSV parsed between two yields to the event loop
WRITERS = 2  # PostgreSQL connections writing batches at once (non-atomic imports)
MAX_ERRORS = 100
MAX_NOTE = 2000
DEFAULT_OUTCOME = "manual"
DEFAULT_REASON = "import"
GZIP_MAGIC = b"\x1f\x8b"
_INFLATE_CHUNK = 1 << 20
# A formula trigger, possibly behind quotes we added before (so the prefix can be undone exactly).
_FORMULA_RE = re.compile(r"'*[=+\-@\t\r]")
_LINE_RE = re.compile(r"[^\n]*\n")
_ENHANCED_RE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_HEADER_NAME_RE = re.compile(r"[^a-z0-9]+")


# ------------------------------------------------------------------------------ cells


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


# ------------------------------------------------------------------------------ options


@dataclass(frozen=True, slots=True)
class ImportOptions:
    dry_run: bool = False
    atomic: bool = False
    overwrite: bool = False
    stream: str | None = None  # scope for rows without a stream column
    reason: str | None = None  # reason for rows without one
    format: str = "auto"
    soft_days: float = 7.0  # expiry of soft entries that presets derive (SendGrid blocks)
    batch_rows: int = BATCH_ROWS

    def __post_init__(self) -> None:
        if self.format != "auto" and self.format not in PRESETS:
            raise InvalidInput(f"format {self.format!r}: one of auto, {', '.join(PRESETS)}")
        if self.reason is not None and not REASON_RE.match(self.reason):
            raise InvalidInput(f"reason {self.reason!r}: snake_case, at most 48 characters")
        scope_for(self.stream)
        if not 1 <= self.batch_rows <= 100_000:
            raise InvalidInput("batch_rows: 1 to 100,000")

    @property
    def scope(self) -> str:
        return scope_for(self.stream)


@dataclass(slots=True)
class ImportSummary:
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0  # valid rows with nothing left to suppress (expiry already passed)
    invalid: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    dry_run: bool = False
    atomic: bool = False
    committed: bool = False
    format: str = ""
    duration_s: float = 0.0

    def error(self, line: int, value: str, reason: str) -> None:
        self.invalid += 1
        if len(self.errors) < MAX_ERRORS:
            # The first errors also go to the audit entry (jsonb): no NUL there.
            value = value[:200].replace("\x00", "\ufffd")
            self.errors.append({"line": line, "value": value, "reason": reason})

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "invalid": self.invalid,
            "errors": list(self.errors),
            "dry_run": self.dry_run,
            "atomic": self.atomic,
            "committed": self.committed,
            "format": self.format,
            "duration_s": round(self.duration_s, 3),
        }


# ------------------------------------------------------------------------------ presets

# (outcome, reason, stream or None for the default, expires_at, note)
Mapped = tuple[str, str, str | None, datetime | None, str | None]
Getter = Callable[[str], str]


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


# Enhanced status codes (RFC 3463) that name the cause; anything else stays "suppressed".
_STATUS_REASON = {
    "5.1.1": "user_unknown",
    "5.1.2": "domain_unknown",
    "5.1.3": "invalid_address",
    "5.1.6": "mailbox_moved",
    "5.1.10": "null_mx",
    "5.2.1": "mailbox_disabled",
}


def _reason_from_status(*texts: str) -> str:
    for value in texts:
        found = _ENHANCED_RE.search(value)
        if found:
            return _STATUS_REASON.get(".".join(found.groups()), "suppressed")
    return "suppressed"


def _note(*parts: str) -> str | None:
    # A provider's text, kept as a note: PostgreSQL cannot store a NUL, so it goes.
    note = " ".join(p.strip() for p in parts if p and p.strip()).replace("\x00", "")
    return note[:MAX_NOTE] or None


def _ses(get: Getter, _o: ImportOptions, _c: datetime | None) -> Mapped:
    kind = get("reason").strip().upper()
    if kind == "BOUNCE":
        return "hard", "suppressed", None, None, "SES BOUNCE"
    if kind == "COMPLAINT":
        return "complaint", "complaint", None, None, "SES COMPLAINT"
    raise RowError(get("reason"), "bad outcome: SES Reason is BOUNCE or COMPLAINT")


def _sendgrid_bounce(get: Getter, _o: ImportOptions, _c: datetime | None) -> Mapped:
    status, text_ = get("status").strip(), get("reason_text").strip()
    note = _note(text_ if status in text_ else f"{status} {text_}")
    return "hard", _reason_from_status(status, text_), None, None, note


def _sendgrid_block(get: Getter, o: ImportOptions, created: datetime | None) -> Mapped:
    # A block is about the sender (IP reputation), not the recipient: suppress for a while only.
    since = created or utcnow()
    expires = since + timedelta(days=o.soft_days)
    return "soft", "blocked", None, expires, _note(get("status"), get("reason_text"))


def _sendgrid_spam(get: Getter, _o: ImportOptions, _c: datetime | None) -> Mapped:
    return "complaint", "complaint", None, None, _note("SendGrid spam report", get("ip"))


def _unsubscribe(_g: Getter, _o: ImportOptions, _c: datetime | None) -> Mapped:
    return "unsubscribe", "unsubscribe", None, None, None


def _complaint(_g: Getter, _o: ImportOptions, _c: datetime | None) -> Mapped:
    return "complaint", "complaint", None, None, None


def _postmark(get: Getter, _o: ImportOptions, _c: datetime | None) -> Mapped:
    kind, origin = get("suppression_reason").strip(), get("origin").strip()
    note = _note("Postmark", kind, f"({origin})" if origin else "")
    match kind.lower():
        case "hardbounce":
            return "hard", "suppressed", None, None, note
        case "spamcomplaint":
            return "complaint", "complaint", None, None, note
        case "manualsuppression" if origin.lower() == "recipient":
            return "unsubscribe", "unsubscribe", None, None, note  # the recipient opted out
        case "manualsuppression":
            return "manual", "manual", None, None, note
    raise RowError(
        kind, "bad outcome: Postmark reason is HardBounce, SpamComplaint or ManualSuppression"
    )


def _mailgun_bounce(get: Getter, _o: ImportOptions, _c: datetime | None) -> Mapped:
    code, error = get("code").strip(), get("error").strip()
    note = _note(error if error.startswith(code) else f"{code} {error}")
    return "hard", _reason_from_status(error), None, None, note


def _mailgun_unsubscribe(get: Getter, _o: ImportOptions, _c: datetime | None) -> Mapped:
    # Mailgun unsubscribes are per tag; "*" (or none) is every mail. A tag is our stream.
    raw = get("tags").strip()
    tags = [t.strip(" \"'") for t in raw.strip("[]").split(",") if t.strip(" \"'")]
    if not tags or tags == ["*"]:
        return "unsubscribe", "unsubscribe", None, None, None
    if len(tags) > 1:
        raise RowError(raw, "bad stream: several tags in one row; give each tag its own row")
    if not STREAM_RE.match(tags[0]):
        raise RowError(raw, "bad stream: the tag is not a valid stream name")
    return "unsubscribe", "unsubscribe", tags[0], None, None


@dataclass(frozen=True, slots=True)
class Preset:
    """A provider's export: which header names hold which field, and how rows map to ours."""

    name: str
    title: str
    columns: dict[str, tuple[str, ...]]  # field -> header keys (see header_key); first is canonical
    # For "auto": header keys that identify the format (all of one alternative needed)
    detect: tuple[tuple[str, ...], ...] = ()
    interpret: Callable[[Getter, ImportOptions, datetime | None], Mapped] | None = None


NATIVE = Preset(
    "stoplist",
    "Stoplist (what `export` writes)",
    {
        "address": (
            "address",
            "email",
            "email_address",
            "emailaddress",
            "e_mail",
            "mail",
            "recipient",
            "recipient_address",
            "recipient_email",
            "to",
        ),
        "outcome": ("outcome", "type", "suppression_type", "kind", "category"),
        "reason": ("reason", "reason_code", "cause"),
        "stream": ("stream", "scope", "message_stream", "channel", "list"),
        "expires_at": ("expires_at", "expires", "expiry", "expiration", "expires_on", "until"),
        "created_at": (
            "created_at",
            "created",
            "first_seen",
            "date",
            "timestamp",
            "added",
            "added_at",
            "date_added",
        ),
        "note": ("note", "notes", "comment", "comments", "description"),
    },
)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        NATIVE,
        Preset(
            "ses",
            "Amazon SES account suppression list (list-suppressed-destinations)",
            {
                "address": ("emailaddress", "email_address"),
                "reason": ("reason",),
                "created_at": ("lastupdatetime", "last_update_time"),
            },
            detect=(("emailaddress", "reason", "lastupdatetime"),),
            interpret=_ses,
        ),
        Preset(
            "sendgrid-bounces",
            "SendGrid bounces",
            {
                "address": ("email",),
                "created_at": ("created",),
                "reason_text": ("reason",),
                "status": ("status",),
            },
            detect=(("email", "created", "status"),),
            interpret=_sendgrid_bounce,
        ),
        Preset(
            "sendgrid-blocks",
            "SendGrid blocks",
            {
                "address": ("email",),
                "created_at": ("created",),
                "reason_text": ("reason",),
                "status": ("status",),
            },
            interpret=_sendgrid_block,
        ),
        Preset(
            "sendgrid-spam-reports",
            "SendGrid spam reports",
            {"address": ("email",), "created_at": ("created",), "ip": ("ip",)},
            detect=(("email", "created", "ip"),),
            interpret=_sendgrid_spam,
        ),
        Preset(
            "sendgrid-unsubscribes",
            "SendGrid global unsubscribes",
            {"address": ("email",), "created_at": ("created",)},
            interpret=_unsubscribe,
        ),
        Preset(
            "postmark",
            "Postmark suppressions export",
            {
                "address": ("email_address", "emailaddress", "email"),
                "suppression_reason": ("suppression_reason", "suppressionreason"),
                "origin": ("origin",),
                "created_at": ("created_at", "createdat"),
            },
            detect=(("suppression_reason",), ("suppressionreason",)),
            interpret=_postmark,
        ),
        Preset(
            "mailgun-bounces",
            "Mailgun bounces",
            {
                "address": ("address",),
                "code": ("code",),
                "error": ("error",),
                "created_at": ("created_at",),
            },
            detect=(("address", "code", "error"),),
            interpret=_mailgun_bounce,
        ),
        Preset(
            "mailgun-complaints",
            "Mailgun complaints",
            {"address": ("address",), "created_at": ("created_at",)},
            interpret=_complaint,
        ),
        Preset(
            "mailgun-unsubscribes",
            "Mailgun unsubscribes",
            {"address": ("address",), "tags": ("tags", "tag"), "created_at": ("created_at",)},
            detect=(("address", "tags"),),
            interpret=_mailgun_unsubscribe,
        ),
    )
}


def detect_preset(keys: Sequence[str]) -> Preset:
    present = set(keys)
    for preset in PRESETS.values():
        if any(present.issuperset(keys) for keys in preset.detect):
            return preset
    return NATIVE


# ------------------------------------------------------------------------------ bytes -> text


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


# ------------------------------------------------------------------------------ text -> records


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


# ------------------------------------------------------------------------------ records -> rows

# (line, address, domain, scope, outcome, reason, note, first_seen, expires_at)
Row = tuple[int, str, str, str, str, str, str | None, datetime | None, datetime | None]


def _checked_note(note: str) -> str:
    if len(note) > MAX_NOTE:
        raise RowError(note[:64] + "…", f"note longer than {MAX_NOTE} characters")
    if "\x00" in note:
        # csv reads NUL since Python 3.11; PostgreSQL's COPY refused the whole batch (a 500).
        raise RowError(note[:64], "note contains a NUL character")
    return note


def _why_invalid(raw: str) -> str:
    try:
        normalise_address(raw)
    except InvalidAddress as exc:
        return exc.why
    return "not a valid email address"


class RowParser:
    """Turns records into validated, folded rows and counts every problem with its line."""

    def __init__(self, options: ImportOptions, summary: ImportSummary) -> None:
        self.options = options
        self.summary = summary
        self.now = utcnow()
        self.preset: Preset | None = None
        self.index: dict[str, int] = {}
        self.pending: dict[tuple[str, str], Row] = {}
        self.default_scope = options.scope
        self.default_reason = options.reason or DEFAULT_REASON
        self._latest = self.now + timedelta(minutes=5)  # clock skew allowed for created_at
        self._positions: tuple[int, ...] | None = None
        self._width = 0
        self._outcomes = {o: o for o in SUPPRESSING_OUTCOMES} | {"": DEFAULT_OUTCOME}
        self._reasons: dict[str, str] = {"": self.default_reason}
        self._scopes: dict[str, str] = {"": self.default_scope, GLOBAL_SCOPE: GLOBAL_SCOPE}

    # header ----------------------------------------------------------------------------------

    def _setup(self, first: list[str]) -> bool:
        """Choose the preset and column positions; True when ``first`` is a header."""
        cells = [c.strip() for c in first]
        is_data = any("@" in c and try_normalise(unneutralise(c)) for c in cells)
        if is_data:
            preset = PRESETS.get(self.options.format, NATIVE)
            if preset is not NATIVE:
                raise InvalidFile(
                    f"format {preset.name!r} needs its header row; the first row is data"
                )
            self.preset = NATIVE
            self.index = {name: i for i, name in enumerate(COLUMNS)}
            self.summary.format = NATIVE.name
            return False
        keys = [header_key(c) for c in cells]
        if self.options.format == "auto":
            preset = detect_preset(keys)
        else:
            preset = PRESETS[self.options.format]
        index: dict[str, int] = {}
        for name, synonyms in preset.columns.items():
            for synonym in synonyms:
                if synonym in keys:
                    index[name] = keys.index(synonym)
                    break
        if "address" not in index:
            wanted = ", ".join(preset.columns["address"][:4])
            raise InvalidFile(
                f"no address column in the header {cells[:12]!r} (format {preset.name}; "
                f"name it one of {wanted}, or use format=...)"
            )
        self.preset, self.index = preset, index
        self.summary.format = preset.name
        return True

    # rows ------------------------------------------------------------------------------------

    def add(self, records: list[tuple[int, list[str] | str]]) -> list[list[Row]]:
        """Validate records; returns the batches that filled up."""
        out: list[list[Row]] = []
        summary = self.summary
        if self.preset is None and records:
            line, first = records[0]
            if isinstance(first, list):
                if self._setup(first):
                    records = records[1:]
            else:
                raise InvalidFile(f"line {line}: {first}")
        convert = self._convert_native if self.preset is NATIVE else self._convert_preset
        pending = self.pending
        limit = self.options.batch_rows
        overwrite = self.options.overwrite
        for line, fields in records:
            summary.rows += 1
            if isinstance(fields, str):
                summary.error(line, "", fields)
                continue
            try:
                row = convert(line, fields)
            except RowError as exc:
                summary.error(line, exc.value, exc.why)
                continue
            if row is None:
                summary.skipped += 1
                continue
            key = (row[1], row[3])
            earlier = pending.get(key)
            if earlier is not None:
                row = row if overwrite else _fold(earlier, row)
                summary.unchanged += 1  # one line of the file folded into another
            pending[key] = row
            if len(pending) >= limit:
                out.append(list(pending.values()))
                pending.clear()
        return out

    def finish(self) -> list[Row]:
        rows = list(self.pending.values())
        self.pending.clear()
        return rows

    def _address(self, raw: str) -> str:
        raw = raw.strip()
        if raw[:1] == "'":
            raw = unneutralise(raw)
        if "\ufffd" in raw:  # what the decoder left of bytes that were not UTF-8
            raise RowError(raw, "invalid address: not valid UTF-8")
        address = try_normalise(raw)
        if address is None:
            raise RowError(raw, f"invalid address: {_why_invalid(raw)}")
        return address

    def _when(self, raw: str, what: str) -> datetime:
        try:
            return parse_time(raw)
        except (ValueError, OverflowError, OSError):
            raise RowError(
                raw, f"bad date in {what}: use ISO 8601, e.g. 2024-05-01T12:00:00Z"
            ) from None

    def _finish_row(
        self,
        line: int,
        address: str,
        scope: str,
        outcome: str,
        reason: str,
        note: str | None,
        created: datetime | None,
        expires: datetime | None,
    ) -> Row | None:
        if created is not None and created > self._latest:
            raise RowError(format_time(created), "bad date in created_at: in the future")
        if expires is not None and expires <= self.now:
            return None
        return (
            line,
            address,
            address.rpartition("@")[2],
            scope,
            outcome,
            reason,
            note,
            created,
            expires,
        )

    def _cell(self, fields: list[str], name: str) -> str:
        at = self.index.get(name)
        if at is None or at >= len(fields):
            return ""
        return fields[at]

    def _convert_native(self, line: int, fields: list[str]) -> Row | None:
        # The hot loop of a large import: exact-match caches first, the careful checks after.
        if self._positions is None:
            at = self.index
            pad = max(at.values()) + 1
            self._positions = tuple(at.get(name, pad) for name in COLUMNS)
            self._width = pad + 1
        ai, oi, ri, si, ei, ci, ni = self._positions
        if len(fields) < self._width:
            fields = fields + [""] * (self._width - len(fields))
        raw = fields[ai]
        if raw[:1] == "'":
            raw = unneutralise(raw)
        address = try_normalise(raw)
        if address is None or "\ufffd" in raw:
            address = self._address(raw)
        value = fields[oi]
        outcome = self._outcomes.get(value)
        if outcome is None:
            outcome = value.strip().lower() or DEFAULT_OUTCOME
            if outcome not in SUPPRESSING_OUTCOMES:
                raise RowError(value, f"bad outcome: one of {', '.join(STRENGTH)}")
        value = fields[ri]
        reason = self._reasons.get(value)
        if reason is None:
            reason = value.strip().lower() or self.default_reason
            if not REASON_RE.match(reason):
                raise RowError(value, "bad reason: snake_case a-z 0-9 _, at most 48 characters")
            if len(self._reasons) < 10_000:
                self._reasons[value] = reason
        value = fields[si]
        scope = self._scopes.get(value)
        if scope is None:
            stream = value.strip()
            if stream.lower() == GLOBAL_SCOPE:
                scope = GLOBAL_SCOPE
            elif STREAM_RE.match(stream):
                scope = stream
            else:
                raise RowError(value, "bad stream: 1-64 of a-z 0-9 _ . - starting with a-z 0-9")
            if len(self._scopes) < 10_000:
                self._scopes[value] = scope
        value = fields[ei]
        expires = self._when(value, "expires_at") if value else None
        value = fields[ci]
        created = self._when(value, "created_at") if value else None
        note = _checked_note(unneutralise(fields[ni])) if fields[ni] else None
        if expires is not None and expires <= self.now:
            return None
        if created is not None and created > self._latest:
            raise RowError(fields[ci], "bad date in created_at: in the future")
        return (
            line,
            address,
            address.rpartition("@")[2],
            scope,
            outcome,
            reason,
            note,
            created,
            expires,
        )

    def _convert_preset(self, line: int, fields: list[str]) -> Row | None:
        preset = self.preset
        assert preset is not None and preset.interpret is not None

        def get(name: str) -> str:
            return unneutralise(self._cell(fields, name))

        address = self._address(self._cell(fields, "address"))
        raw = get("created_at").strip()
        created = self._when(raw, "created_at") if raw else None
        outcome, reason, stream, expires, note = preset.interpret(get, self.options, created)
        scope = self.default_scope if stream is None else stream
        return self._finish_row(line, address, scope, outcome, reason, note, created, expires)


def _fold(earlier: Row, later: Row) -> Row:
    """Two lines for the same (address, scope) in one batch: what applying both would leave."""
    strong = later if stronger_or_equal(later[4], earlier[4]) else earlier
    a, b = earlier[8], later[8]
    expires = None if a is None or b is None else max(a, b)
    note = later[6] or earlier[6]
    created = earlier[7] or later[7]
    return (earlier[0], *strong[1:6], note, created, expires)


# ------------------------------------------------------------------------------ SQL


def _upsert_sql(dialect: str, *, overwrite: bool) -> str:
    """``INSERT … SELECT … ON CONFLICT DO UPDATE … WHERE changed``: ``merge_into`` as one statement
    (its ``SET`` and ``WHERE`` generated from the same table, ``app.suppression.merge``).

    ``:now`` is the batch's timestamp. Rows that would not change are not touched (no revision,
    hit or timestamp bump), which is what makes a re-import a no-op."""
    pg = dialect == "postgresql"
    now = "$1" if pg else ":now"
    merged, changed = merge_set_sql(dialect, now=now, overwrite=overwrite)
    empty = "'{}'::jsonb" if pg else "'{}'"
    detail = f"(CASE WHEN note IS NULL THEN {empty} ELSE " + (
        "jsonb_build_object('note', note) END)" if pg else "json_object('note', note) END)"
    )
    returning = "address, scope, outcome, reason, " + (
        "(xmax = 0) AS inserted" if pg else "(revision = 1) AS inserted"
    )
    id_column = "id, " if pg else ""
    # PostgreSQL: rows are locked in the order they are inserted; (address, scope) is the order
    # every other writer locks in, so an import and a single write queue instead of deadlocking
    # (tests/app/test_concurrency.py). Ids were taken in file order beforehand. SQLite (one
    # writer) numbers rows as inserted: file order.
    order = "address, scope" if pg else "line"
    assignments = ",\n    ".join(merged)
    # Every interpolated piece is a constant of this module; the values travel as parameters.
    return f"""
INSERT INTO suppressions AS s
    ({id_column}address, domain, scope, outcome, reason, source, detail, verified, first_seen,
     last_seen, expires_at, hit_count, removed_at, revision, updated_at)
SELECT {id_column}address, domain, scope, outcome, reason, 'import', {detail}, FALSE,
       COALESCE(first_seen, {now}), {now}, expires_at, 1, NULL, 1, {now}
FROM stoplist_import_stage WHERE TRUE ORDER BY {order}
ON CONFLICT (address, scope) DO UPDATE SET
    {assignments},
    removed_at = NULL,
    revision = s.revision + 1,
    last_seen = excluded.last_seen,
    updated_at = excluded.updated_at
WHERE {changed}
RETURNING {returning}"""  # noqa: S608


_PG_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS stoplist_import_stage (
    id bigint, line bigint, address text, domain text, scope text, outcome text, reason text, note text,
    first_seen timestamptz, expires_at timestamptz
) ON COMMIT DELETE ROWS"""

_SQLITE_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS stoplist_import_stage (
    line INTEGER, address TEXT, domain TEXT, scope TEXT, outcome TEXT, reason TEXT, note TEXT,
    first_seen TEXT, expires_at TEXT
)"""

_STAGE_COLUMNS = [
    "line",
    "address",
    "domain",
    "scope",
    "outcome",
    "reason",
    "note",
    "first_seen",
    "expires_at",
]


def _sqlite_time(value: datetime | None) -> str | None:
    # The text form SQLAlchemy's SQLite DATETIME stores (see app.models.UTCDateTime).
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


@dataclass(slots=True)
class BatchResult:
    inserted: int
    updated: int
    changed: list[str]  # addresses whose cache entry must be refreshed


class _PgStore:
    """COPY into a TEMP table, then one upsert whose CTE also writes the per-row events."""

    def __init__(self, db: Database, *, overwrite: bool, actor: str, import_id: str) -> None:
        self.db = db
        self.actor = actor
        self.import_id = import_id
        self.event_detail = f'{{"import": "{import_id}"}}'  # import_id is hex: no escaping
        self.sql = (
            "WITH up AS ("  # noqa: S608 - constant SQL, values are parameters
            + _upsert_sql("postgresql", overwrite=overwrite)
            + "\n), ev AS (\n"
            "INSERT INTO events (created_at, address, scope, kind, outcome, reason, source, actor,"
            " verified, detail)\n"
            "SELECT $1, address, scope, 'import', outcome, reason, 'import', $2, FALSE,"
            " $3::jsonb FROM up\n)\n"
            "SELECT address, inserted FROM up"
        )
        self._conn: AsyncConnection | None = None
        self._pg: Any = None
        self._read_conn: AsyncConnection | None = None  # cache refreshes, beside the writer
        self._read_pg: Any = None
        self._sequence = ""
        self._tx: Any = None
        self._dirty_stage = False

    async def open(self) -> None:
        self._conn = await self.db.engine.connect()
        self._pg = (await self._conn.get_raw_connection()).driver_connection
        self._sequence = await self._pg.fetchval(
            "SELECT pg_get_serial_sequence('suppressions', 'id')"
        )
        self._read_conn = await self.db.engine.connect()
        self._read_pg = (await self._read_conn.get_raw_connection()).driver_connection

    async def close(self) -> None:
        if self._tx is not None:
            with contextlib.suppress(Exception):
                await self._tx.rollback()
            self._tx = None
        for conn in (self._conn, self._read_conn):
            if conn is not None:
                await conn.close()
        self._conn = self._read_conn = None

    async def begin(self) -> None:
        self._tx = self._pg.transaction()
        await self._tx.start()
        await self._pg.execute(_PG_STAGE)
        self._dirty_stage = False

    async def allocate_ids(self, count: int) -> list[int]:
        ids: list[int] = await self._pg.fetchval(
            "SELECT array_agg(v ORDER BY v) FROM"
            " (SELECT nextval($1::regclass) AS v FROM generate_series(1, $2)) AS n",
            self._sequence,
            count,
        )
        return ids

    async def write(self, rows: list[Row], now: datetime, ids: list[int] | None) -> BatchResult:
        pg = self._pg
        if self._dirty_stage:
            await pg.execute("TRUNCATE stoplist_import_stage")
        assert ids is not None
        await pg.copy_records_to_table(
            "stoplist_import_stage",
            records=[(i, *r) for i, r in zip(ids, rows, strict=True)],
            columns=["id", *_STAGE_COLUMNS],
        )
        self._dirty_stage = True
        result = await pg.fetch(self.sql, now, self.actor, self.event_detail)
        inserted = sum(1 for r in result if r[1])
        return BatchResult(inserted, len(result) - inserted, [r[0] for r in result])

    async def touch(self, old: datetime, new: datetime) -> None:
        await self._pg.execute(
            "UPDATE suppressions SET updated_at = $2 WHERE updated_at = $1", old, new
        )

    async def commit(self) -> None:
        tx, self._tx = self._tx, None
        await tx.commit()

    async def rollback(self) -> None:
        tx, self._tx = self._tx, None
        if tx is not None:
            await tx.rollback()

    async def changed_since(self, stamp: datetime) -> AsyncIterator[list[str]]:
        async with self._pg.transaction():
            cursor = self._pg.cursor(
                "SELECT DISTINCT address FROM suppressions WHERE updated_at = $1", stamp
            )
            batch: list[str] = []
            async for record in cursor:
                batch.append(record[0])
                if len(batch) >= BATCH_ROWS:
                    yield batch
                    batch = []
            if batch:
                yield batch

    async def cache_items(
        self, addresses: Sequence[str], now: datetime
    ) -> list[tuple[str, int, list[CachedEntry]]]:
        records = await self._read_pg.fetch(
            "SELECT address, scope, outcome, reason, first_seen, expires_at, verified, source,"
            " revision, removed_at FROM suppressions WHERE address = ANY($1::text[])",
            list(addresses),
        )
        return cache_items(addresses, records, now)


class _Rollback(Exception):
    pass


class _SqliteStore:
    """The embedded default: executemany into a TEMP table, the same upsert, events from Python."""

    def __init__(self, db: Database, *, overwrite: bool, actor: str, import_id: str) -> None:
        self.db = db
        self.actor = actor
        self.import_id = import_id
        self.sql = text(_upsert_sql("sqlite", overwrite=overwrite))
        self._cm: contextlib.AbstractAsyncContextManager[AsyncSession] | None = None
        self._session: AsyncSession | None = None

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        await self.rollback()

    async def begin(self) -> None:
        self._cm = self.db.write()
        self._session = await self._cm.__aenter__()
        await self._session.execute(text(_SQLITE_STAGE))

    async def allocate_ids(self, count: int) -> None:
        return None  # one writer: INSERT … ORDER BY line numbers them in order

    async def write(self, rows: list[Row], now: datetime, ids: list[int] | None) -> BatchResult:
        s = self._session
        assert s is not None
        await s.execute(text("DELETE FROM stoplist_import_stage"))
        await s.execute(
            text(
                "INSERT INTO stoplist_import_stage VALUES (:line, :address, :domain, :scope,"
                " :outcome, :reason, :note, :first_seen, :expires_at)"
            ),
            [
                {
                    "line": r[0],
                    "address": r[1],
                    "domain": r[2],
                    "scope": r[3],
                    "outcome": r[4],
                    "reason": r[5],
                    "note": r[6],
                    "first_seen": _sqlite_time(r[7]),
                    "expires_at": _sqlite_time(r[8]),
                }
                for r in rows
            ],
        )
        stamp = _sqlite_time(now)
        result = (await s.execute(self.sql, {"now": stamp})).all()
        if result:
            detail = f'{{"import": "{self.import_id}"}}'
            await s.execute(
                text(
                    "INSERT INTO events (created_at, address, scope, kind, outcome, reason,"
                    " source, actor, verified, detail) VALUES (:now, :address, :scope, 'import',"
                    " :outcome, :reason, 'import', :actor, 0, :detail)"
                ),
                [
                    {
                        "now": stamp,
                        "address": r[0],
                        "scope": r[1],
                        "outcome": r[2],
                        "reason": r[3],
                        "actor": self.actor,
                        "detail": detail,
                    }
                    for r in result
                ],
            )
        inserted = sum(1 for r in result if r[4])
        return BatchResult(inserted, len(result) - inserted, [r[0] for r in result])

    async def touch(self, old: datetime, new: datetime) -> None:
        assert self._session is not None
        await self._session.execute(
            text("UPDATE suppressions SET updated_at = :new WHERE updated_at = :old"),
            {"old": _sqlite_time(old), "new": _sqlite_time(new)},
        )

    async def commit(self) -> None:
        cm, self._cm, self._session = self._cm, None, None
        if cm is not None:
            await cm.__aexit__(None, None, None)

    async def rollback(self) -> None:
        cm, self._cm, self._session = self._cm, None, None
        if cm is not None:
            await cm.__aexit__(_Rollback, _Rollback(), None)

    async def changed_since(self, stamp: datetime) -> AsyncIterator[list[str]]:
        async with self.db.read() as s:
            found = (
                await s.scalars(
                    select(Suppression.address).where(Suppression.updated_at == stamp).distinct()
                )
            ).all()
        for start in range(0, len(found), BATCH_ROWS):
            yield list(found[start : start + BATCH_ROWS])

    async def cache_items(
        self, addresses: Sequence[str], now: datetime
    ) -> list[tuple[str, int, list[CachedEntry]]]:
        records: list[Any] = []
        async with self.db.read() as s:
            for start in range(0, len(addresses), 1000):
                chunk = addresses[start : start + 1000]
                records += (
                    await s.execute(select(*CACHE_COLUMNS).where(Suppression.address.in_(chunk)))
                ).all()
        return cache_items(addresses, records, now)


# ------------------------------------------------------------------------------ import


ProgressFn = Callable[[ImportSummary], None]


async def import_csv(
    service: SuppressionService,
    chunks: AsyncIterator[bytes],
    options: ImportOptions,
    *,
    actor: str,
    progress: ProgressFn | None = None,
) -> ImportSummary:
    """Import a CSV stream (already unwrapped: see :func:`request_body`)."""
    with _few_collections():
        return await _import(service, chunks, options, actor=actor, progress=progress)


_gc_holders = 0
_gc_holders_saved: list[int] = []


@contextlib.contextmanager
def _few_collections() -> Iterator[None]:
    """A large import allocates millions of short-lived lists and tuples that die young anyway;
    young-generation collections over them cost about a third of the CPU, so run fewer."""
    global _gc_holders
    if _gc_holders == 0:
        _gc_holders_saved[:] = gc.get_threshold()
        gc.set_threshold(max(100_000, _gc_holders_saved[0]), *_gc_holders_saved[1:])
    _gc_holders += 1
    try:
        yield
    finally:
        _gc_holders -= 1
        if _gc_holders == 0:
            gc.set_threshold(*_gc_holders_saved)


async def _import(
    service: SuppressionService,
    chunks: AsyncIterator[bytes],
    options: ImportOptions,
    *,
    actor: str,
    progress: ProgressFn | None,
) -> ImportSummary:
    started = time.perf_counter()
    summary = ImportSummary(dry_run=options.dry_run, atomic=options.atomic)
    db = service.db
    import_id = uuid.uuid4().hex[:16]
    one_transaction = options.atomic or options.dry_run
    stores: list[_PgStore | _SqliteStore]
    if db.dialect == "postgresql":
        # Two writers keep a second PostgreSQL backend busy while the first commits or waits;
        # ids are taken from the sequence in batch order, so rows keep the file's order.
        writers = 1 if one_transaction else WRITERS
        stores = [
            _PgStore(db, overwrite=options.overwrite, actor=actor, import_id=import_id)
            for _ in range(writers)
        ]
    else:
        stores = [_SqliteStore(db, overwrite=options.overwrite, actor=actor, import_id=import_id)]
    queue: asyncio.Queue[list[Row] | None] = asyncio.Queue(maxsize=len(stores) + 1)
    parser = RowParser(options, summary)

    async def produce() -> None:
        # Parsing runs here while the writers wait on the database: the two overlap.
        records = CsvRecords()
        try:
            async for data in chunks:
                # A slice at a time, yielding between: parsing a 64 KB chunk in one go holds the
                # event loop (and every pre-send check on it) for tens of milliseconds.
                for start in range(0, len(data), PARSE_SLICE):
                    for batch in parser.add(records.push(data[start : start + PARSE_SLICE])):
                        await queue.put(batch)
                    await asyncio.sleep(0)
                if progress is not None:
                    progress(summary)
            for batch in parser.add(records.push(b"", final=True)):
                await queue.put(batch)
            last = parser.finish()
            if last:
                await queue.put(last)
        finally:
            await queue.put(None)

    # Cache write-through runs beside the writers, on its own connection, a batch behind.
    refreshes: asyncio.Queue[list[str] | None] = asyncio.Queue(maxsize=len(stores) + 1)

    async def refresh(store: _PgStore | _SqliteStore) -> None:
        while (addresses := await refreshes.get()) is not None:
            await _refresh(service, store, addresses)
        await refreshes.put(None)  # for the other refreshers

    stamp = utcnow()
    taken = 0  # batches handed to writers
    numbered = 0  # batches that have their ids
    turn = asyncio.Condition()

    async def write(store: _PgStore | _SqliteStore) -> None:
        nonlocal taken, numbered
        while True:
            batch = await queue.get()
            if batch is None:
                await queue.put(None)  # for the other writers
                return
            if options.atomic and summary.invalid:
                continue  # nothing will be written: only keep validating
            mine, taken = taken, taken + 1
            async with turn:
                await turn.wait_for(lambda: numbered == mine)  # noqa: B023 - read at once
                ids = await store.allocate_ids(len(batch))
                numbered += 1
                turn.notify_all()
            now = stamp if one_transaction else utcnow()
            for attempt in range(3):
                if not one_transaction:
                    await store.begin()
                try:
                    result = await store.write(batch, now, ids)
                except DeadlockError:
                    # Two batches in flight locked the same rows in opposite orders.
                    if one_transaction or attempt == 2:
                        raise
                    await store.rollback()
                    continue
                if not one_transaction:
                    await store.commit()
                    summary.committed = True
                break
            summary.inserted += result.inserted
            summary.updated += result.updated
            summary.unchanged += len(batch) - result.inserted - result.updated
            if not one_transaction:
                await refreshes.put(result.changed)
            if progress is not None:
                progress(summary)

    producer = asyncio.create_task(produce())
    # Each store's read connection serves one refresher: a database read for one batch can
    # overlap the Redis write of another.
    refreshers = [asyncio.create_task(refresh(each)) for each in stores]
    tasks: list[asyncio.Task[None]] = []
    error: str | None = None
    store = stores[0]
    try:
        for each in stores:
            await each.open()
        if one_transaction:
            await store.begin()
        tasks = [asyncio.create_task(write(each)) for each in stores]
        await asyncio.gather(*tasks)
        await producer
        if one_transaction:
            if options.dry_run or (options.atomic and summary.invalid):
                await store.rollback()
                if not options.dry_run:
                    summary.inserted = summary.updated = summary.unchanged = 0
            else:
                # Stamp the rows with the commit time: an embedded replica polling updated_at
                # (``sync_from_database``) must not miss rows written early in a long import.
                committed_at = utcnow()
                if summary.inserted or summary.updated:
                    await store.touch(stamp, committed_at)
                await store.commit()
                summary.committed = True
                async for addresses in store.changed_since(committed_at):
                    await refreshes.put(addresses)
        await refreshes.put(None)
        await asyncio.gather(*refreshers)
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        for task in (producer, *refreshers, *tasks):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        raise
    finally:
        for each in stores:
            with contextlib.suppress(Exception):
                await each.close()
        summary.duration_s = time.perf_counter() - started
        if not options.dry_run:
            await _audit(db, actor, options, summary, import_id, error)
    return summary


async def _refresh(
    service: SuppressionService, store: _PgStore | _SqliteStore, addresses: list[str]
) -> None:
    """Write the committed state of a batch through to the cache in one round of puts."""
    if not addresses:
        return
    try:
        # A slice at a time: building and sending a whole batch's entries is ~100 ms of CPU in
        # one go, a stall every pre-send check on this event loop would wait out.
        for start in range(0, len(addresses), REFRESH_SLICE):
            items = await store.cache_items(addresses[start : start + REFRESH_SLICE], utcnow())
            await service.cache.put_many(items)
    except (CacheUnavailable, *DB_ERRORS) as exc:
        # The rows are committed; the replica lacks them: stop trusting it until rebuilt.
        log.error("cache write-through failed during import (%s); checks use the database", exc)
        service.cache_dirty = True
        metrics.CACHE_WRITE_FAILURES.inc()


async def _audit(
    db: Database,
    actor: str,
    options: ImportOptions,
    summary: ImportSummary,
    import_id: str,
    error: str | None,
) -> None:
    detail = summary.as_dict()
    del detail["errors"]
    detail.update(
        import_id=import_id,
        overwrite=options.overwrite,
        stream=options.scope,
        first_errors=summary.errors[:5],
        error=error,
    )
    try:
        async with db.write() as s:
            s.add(
                AuditEntry(
                    created_at=utcnow(),
                    actor=actor,
                    action="import",
                    address=None,
                    scope=options.scope,
                    reason=options.reason,
                    detail=detail,
                )
            )
    except Exception as exc:  # the import itself is done; say so rather than fail it
        log.error("could not write the audit entry of import %s: %s", import_id, exc)


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


# ------------------------------------------------------------------------------ export


@dataclass(frozen=True, slots=True)
class ExportFilter(SuppressionFilter):
    """The list's filters, plus addresses as SHA-256 of the normalised address."""

    hashed: bool = False


@dataclass(slots=True)
class ExportStats:
    rows: int = 0
    bytes: int = 0


def header_line(hashed: bool) -> bytes:
    return (",".join(HASHED_COLUMNS if hashed else COLUMNS) + "\n").encode()


def _csv_cell(value: str) -> str:
    # Quote exactly when PostgreSQL's COPY … CSV does, so both backends write the same bytes.
    if "," in value or '"' in value or "\n" in value or "\r" in value:
        return '"' + value.replace('"', '""') + '"'
    return value


_PG_TIME = '\'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\''


def _pg_neutralise(column: str) -> str:
    return rf"CASE WHEN ({column}) ~ '^''*[-=+@\t\r]' THEN '''' || ({column}) ELSE {column} END"


def _export_where(flt: ExportFilter, pg: bool) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {"now": utcnow()}
    where = [active_sql("", ":now")]
    if flt.outcome:
        where.append("outcome = :outcome")
        params["outcome"] = flt.outcome
    if flt.reason:
        where.append("reason = :reason")
        params["reason"] = flt.reason
    if flt.stream:
        where.append("scope = :scope")
        params["scope"] = scope_for(flt.stream)
    if flt.domain:
        where.append("domain = :domain")
        params["domain"] = flt.domain
    if flt.since:
        where.append("last_seen >= :since")
        params["since"] = flt.since
    if not pg:
        for name in ("now", "since"):
            if name in params:
                params[name] = _sqlite_time(params[name])
    return " AND ".join(where), params


def export_csv(
    service: SuppressionService, flt: ExportFilter, stats: ExportStats | None = None
) -> AsyncIterator[bytes]:
    """The active suppressions as CSV bytes, oldest id first, streamed in ~64 KiB pieces."""
    stats = stats if stats is not None else ExportStats()
    if service.db.dialect == "postgresql":
        return _export_pg(service.db, flt, stats)
    return _export_sqlite(service.db, flt, stats)


async def _export_pg(db: Database, flt: ExportFilter, stats: ExportStats) -> AsyncIterator[bytes]:
    where, params = _export_where(flt, pg=True)
    names = list(params)
    for i, name in enumerate(names, start=1):
        where = where.replace(f":{name}", f"${i}")
    address = (
        "encode(sha256(convert_to(address, 'UTF8')), 'hex')"
        if flt.hashed
        else _pg_neutralise("address")
    )
    note = _pg_neutralise("detail->>'note'")
    # Interpolated: constants and placeholders only; the values travel as parameters.
    query = (
        f"SELECT {address}, outcome, reason, NULLIF(scope, '{GLOBAL_SCOPE}'),"  # noqa: S608
        f" to_char(expires_at AT TIME ZONE 'UTC', {_PG_TIME}),"
        f" to_char(first_seen AT TIME ZONE 'UTC', {_PG_TIME}),"
        f" NULLIF({note}, '')"
        f" FROM suppressions WHERE {where} ORDER BY id"
    )
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=16)

    async def sink(data: bytes) -> None:
        await queue.put(data)

    head = header_line(flt.hashed)
    stats.bytes += len(head)
    yield head
    async with db.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        pg: Any = raw.driver_connection

        async def run() -> str:
            try:
                status: str = await pg.copy_from_query(
                    query, *[params[n] for n in names], output=sink, format="csv"
                )
                return status
            finally:
                await queue.put(None)

        task = asyncio.create_task(run())
        try:
            pending: list[bytes] = []
            size = 0
            while (data := await queue.get()) is not None:
                pending.append(data)
                size += len(data)
                if size >= 65536:
                    out = b"".join(pending)
                    pending, size = [], 0
                    stats.bytes += len(out)
                    yield out
            status = await task
            if pending:
                out = b"".join(pending)
                stats.bytes += len(out)
                yield out
            stats.rows = int(status.split()[-1]) if status.split()[-1].isdigit() else stats.rows
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


async def _export_sqlite(
    db: Database, flt: ExportFilter, stats: ExportStats
) -> AsyncIterator[bytes]:
    where, params = _export_where(flt, pg=False)
    query = text(
        "SELECT id, address, outcome, reason, scope, expires_at, first_seen, detail"  # noqa: S608
        f" FROM suppressions WHERE {where} AND id > :after ORDER BY id LIMIT :limit"
    ).columns(
        Suppression.id,
        Suppression.address,
        Suppression.outcome,
        Suppression.reason,
        Suppression.scope,
        Suppression.expires_at,
        Suppression.first_seen,
        Suppression.detail,
    )
    head = header_line(flt.hashed)
    stats.bytes += len(head)
    yield head
    after = 0
    while True:
        async with db.read() as s:
            rows = (await s.execute(query, {**params, "after": after, "limit": 5000})).all()
        if not rows:
            return
        lines = []
        for _id, address, outcome, reason, scope, expires, first, detail in rows:
            note = (detail or {}).get("note") or ""
            shown = (
                hashlib.sha256(address.encode()).hexdigest() if flt.hashed else neutralise(address)
            )
            cells = (
                shown,
                outcome,
                reason,
                "" if scope == GLOBAL_SCOPE else scope,
                format_time(expires),
                format_time(first),
                neutralise(str(note)),
            )
            lines.append(",".join(map(_csv_cell, cells)))
        out = ("\n".join(lines) + "\n").encode()
        stats.rows += len(rows)
        stats.bytes += len(out)
        yield out
        after = rows[-1][0]
