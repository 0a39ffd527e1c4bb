"""PowerMTA accounting files (CSV): one event per ``d``/``b``/``t``/``tq``/``rb``/``rs``/``f`` record.

From the PowerMTA User's Guide, "Accounting records": the file is RFC 4180 CSV with a header line
naming the columns; the first column is always ``type``; which fields follow, and in what order,
is configured (``record-fields``), so every column is found by its header name. A file holding
several record types has the union of their columns, empty where a type has no such field. A
new header line may appear mid-stream (a configuration change, a rotated file piped in).

Record types: ``d`` delivered, ``b`` bounced (including expiry: ``bounceCat`` message-expired), ``t``
transient failure, ``tq`` transient failure of a whole queue (no recipient), ``rb``/``rs`` remote
bounce / remote status (an asynchronous DSN read by PowerMTA's bounce processor), ``f`` feedback
loop report, ``r`` received (ignored: nothing happened to a recipient yet). The long names
(``delivery``, ``bounce``, ...) are accepted too.

Quirks: ``dsnStatus`` carries a comment (``5.1.1 (bad destination mailbox address)``); ``dsnDiag``
a type prefix (``smtp;550 5.1.1 ...``); ``dsnMta`` the host and its address in parentheses; times are
Unix ``time_t`` by default or ISO 8601 when configured. ``bounceCat`` is PowerMTA's own guess, kept
beside our classification of ``dsnStatus`` + ``dsnDiag``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from typing import Final

from events.classify import make_event
from events.fields import address, diagnostic, parse_reply, parse_time, status_of
from events.model import Event, EventError, EventKind, Source, dedupe_id

__all__ = ["parse_pmta"]

_KINDS: Final[dict[str, EventKind | None]] = {
    "d": EventKind.DELIVERED,
    "delivery": EventKind.DELIVERED,
    "b": EventKind.BOUNCE,
    "bounce": EventKind.BOUNCE,
    "t": EventKind.DEFERRED,
    "transient": EventKind.DEFERRED,
    "tq": EventKind.DEFERRED,
    "transient-queue": EventKind.DEFERRED,
    "rb": EventKind.BOUNCE,
    "remote-bounce": EventKind.BOUNCE,
    "rs": EventKind.BOUNCE,  # decided by its dsnAction below
    "remote-status": EventKind.BOUNCE,
    "f": EventKind.COMPLAINT,
    "feedback-loop": EventKind.COMPLAINT,
    "r": None,
    "receipt": None,
}
_REMOTE_STATUS: Final[dict[str, EventKind]] = {
    "failed": EventKind.BOUNCE,
    "delayed": EventKind.DEFERRED,
    "delivered": EventKind.DELIVERED,
    "relayed": EventKind.DELIVERED,
    "expanded": EventKind.DELIVERED,
}
_RECIPIENT_FIELDS: Final = ("rcpt", "origrcpt", "orcpt", "header_to")
_EXPIRED_CATEGORY: Final = "message-expired"


class _Columns:
    """Column positions of the fields we read, from one header line (names compared lower-case)."""

    def __init__(self, header: Sequence[str], stream_header: str) -> None:
        index = {name.strip().lower(): i for i, name in enumerate(header)}
        self.width = len(header)

        def at(*names: str) -> int | None:
            for name in names:
                if name in index:
                    return index[name]
            return None

        self.type = at("type")
        self.time = at("timelogged")
        self.queued = at("timequeued")
        self.orig = at("orig")
        self.rcpt = next((index[n] for n in _RECIPIENT_FIELDS if n in index), None)
        self.action = at("dsnaction")
        self.status = at("dsnstatus")
        self.diag = at("dsndiag")
        self.mta = at("dsnmta")
        self.category = at("bouncecat")
        self.ip = at("dlvsourceip")
        self.vmta = at("vmta")
        self.pool = at("vmtapool")
        self.job = at("jobid")
        self.env = at("envid")
        self.message_id = at("header_message-id")
        self.stream = at(f"header_{stream_header.lower()}")
        self.feedback = at("feedbacktype", "feedback-type")


def _cell(row: Sequence[str], pos: int | None) -> str | None:
    if pos is None:
        return None
    value = row[pos].strip()
    return value or None


def parse_pmta(
    lines: Iterable[str],
    origin: str = "-",
    *,
    header: Sequence[str] | None = None,
    stream_header: str = "X-Stoplist-Stream",
) -> Iterator[Event | EventError]:
    """Events from accounting-file lines (with or without line ends), errors for bad records.

    ``origin`` names the file in each location (``origin:line``). ``header`` gives the columns
    when the input starts after the header line (a pipe joined mid-file).
    """
    columns = _Columns(header, stream_header) if header is not None else None
    reader = csv.reader(lines, strict=True)
    line = 0
    while True:
        start = line + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line = reader.line_num
            yield EventError(Source.PMTA, f"{origin}:{start}", f"bad CSV: {exc}")
            continue
        line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if row[0].strip().lower() == "type":
            columns = _Columns(row, stream_header)
            continue
        location = f"{origin}:{start}"
        if columns is None:
            yield EventError(Source.PMTA, location, "record before any header line", ",".join(row))
            continue
        if len(row) != columns.width:
            yield EventError(
                Source.PMTA,
                location,
                f"{len(row)} fields where the header names {columns.width}",
                ",".join(row),
            )
            continue
        result = _record(row, columns, location)
        if result is not None:
            yield result


def _record(row: list[str], columns: _Columns, location: str) -> Event | EventError | None:
    record_type = (_cell(row, columns.type) or "").lower()
    if record_type not in _KINDS:
        return EventError(
            Source.PMTA, location, f"unknown record type {record_type!r}", ",".join(row)
        )
    kind = _KINDS[record_type]
    if kind is None:
        return None
    category = _cell(row, columns.category)
    status = status_of(_cell(row, columns.status))
    action = (_cell(row, columns.action) or "").lower()
    if record_type in ("rs", "remote-status"):
        kind = _REMOTE_STATUS.get(action, EventKind.BOUNCE)
    if kind is EventKind.BOUNCE and (
        (category or "").lower() == _EXPIRED_CATEGORY or status == "4.4.7"
    ):
        kind = EventKind.EXPIRED
    recipient = address(_cell(row, columns.rcpt))
    if recipient is None and record_type not in ("tq", "transient-queue"):
        return EventError(Source.PMTA, location, "no recipient address", ",".join(row))
    diag = diagnostic(_cell(row, columns.diag))
    reply_code, reply_status = parse_reply(diag)
    mta = _cell(row, columns.mta)
    if mta is not None:
        mta = mta.split()[0].rstrip(".")
    time = parse_time(_cell(row, columns.time))
    if time is None and _cell(row, columns.time) is not None:
        return EventError(Source.PMTA, location, "unreadable timeLogged", ",".join(row))
    return make_event(
        Source.PMTA,
        kind,
        recipient=recipient,
        dedupe=dedupe_id(Source.PMTA, *row),
        location=location,
        sender=address(_cell(row, columns.orig)),
        time=time,
        queued_at=parse_time(_cell(row, columns.queued)),
        reply_code=reply_code,
        status=status or reply_status,
        diagnostic=diag,
        remote_mta=mta,
        vendor_category=category,
        feedback_type=_cell(row, columns.feedback) if kind is EventKind.COMPLAINT else None,
        stream=_cell(row, columns.stream),
        ip=_cell(row, columns.ip),
        pool=_cell(row, columns.pool),
        vmta=_cell(row, columns.vmta),
        job_id=_cell(row, columns.job) or _cell(row, columns.env),
        message_id=_cell(row, columns.message_id),
    )
