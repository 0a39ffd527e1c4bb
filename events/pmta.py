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
import operator
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Final

from events.classify import DELIVERED as _DELIVERED_RESULT
from events.classify import make_event
from events.fields import address, diagnostic, parse_reply, parse_time, status_of
from events.model import DeliveryKey, Event, EventError, EventKind, Source, dedupe_id

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


# The fields read, in the order ``_Columns.pick`` returns them; each with its header names
# (lower case; the first found wins).
_FIELDS: Final = (
    ("type",),
    ("timelogged",),
    ("timequeued",),
    ("orig",),
    _RECIPIENT_FIELDS,
    ("dsnaction",),
    ("dsnstatus",),
    ("dsndiag",),
    ("dsnmta",),
    ("bouncecat",),
    ("dlvsourceip",),
    ("vmta",),
    ("vmtapool",),
    ("jobid",),
    ("envid",),
    ("header_message-id",),
    ("feedbacktype", "feedback-type"),
)


class _Columns:
    """Where each field we read sits, from one header line (names compared lower-case).

    ``pick(row)`` returns them all at once (``operator.itemgetter``, in C: the hot path); a field
    the header lacks points one past the end, where ``parse_pmta`` appends an empty cell.
    """

    def __init__(self, header: Sequence[str], stream_header: str) -> None:
        index: dict[str, int] = {}
        for i, name in enumerate(header):
            index.setdefault(name.strip().lower(), i)
        self.width = len(header)
        missing = self.width
        positions = [
            next((index[n] for n in names if n in index), missing)
            for names in (*_FIELDS, (f"header_{stream_header.lower()}",))
        ]
        self.pick = operator.itemgetter(*positions)


def parse_pmta(
    lines: Iterable[str],
    origin: str = "-",
    *,
    header: Sequence[str] | None = None,
    stream_header: str = "X-Stoplist-Stream",
    first_line: int = 1,
    deliveries: dict[DeliveryKey, int] | None = None,
) -> Iterator[Event | EventError]:
    """Events from accounting-file lines (with or without line ends), errors for bad records.

    ``origin`` names the file in each location (``origin:line``). ``header`` gives the columns
    when the input starts after the header line (a pipe joined mid-file, a file resumed at an
    offset); ``first_line`` is then the number of the first line given. ``deliveries``: each
    readable ``d`` record is counted there by its ``DeliveryKey`` instead of yielded as an
    ``Event`` (no dedupe id, no location: the caller only counts them); a ``d`` record that is
    not readable is still yielded as its ``EventError``.
    """
    columns = _Columns(header, stream_header) if header is not None else None
    reader = csv.reader(lines, strict=True)
    base = first_line - 1
    line = 0
    while True:
        start = line + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line = reader.line_num
            yield EventError(Source.PMTA, f"{origin}:{base + start}", f"bad CSV: {exc}")
            continue
        line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if row[0].strip().lower() == "type":
            columns = _Columns(row, stream_header)
            continue
        if columns is None:
            location = f"{origin}:{base + start}"
            yield EventError(Source.PMTA, location, "record before any header line", ",".join(row))
            continue
        if len(row) != columns.width:
            yield EventError(
                Source.PMTA,
                f"{origin}:{base + start}",
                f"{len(row)} fields where the header names {columns.width}",
                ",".join(row),
            )
            continue
        row.append("")  # the cell of every field the header lacks (see _Columns)
        values = columns.pick(row)
        row.pop()
        if deliveries is not None and values[0] == "d" and _count_delivery(values, deliveries):
            continue
        result = _record(row, values, f"{origin}:{base + start}")
        if result is not None:
            yield result


_PMTA: Final = Source.PMTA
_DELIVERED: Final = EventKind.DELIVERED
_BOUNCE: Final = EventKind.BOUNCE
_QUEUE_TYPES: Final = frozenset({"tq", "transient-queue"})


def _record(row: list[str], values: tuple[str, ...], location: str) -> Event | EventError | None:
    (
        record_type,
        logged,
        queued,
        orig,
        rcpt,
        action,
        dsn_status,
        dsn_diag,
        mta,
        category,
        ip,
        vmta,
        pool,
        job,
        env,
        message_id,
        feedback,
        stream,
    ) = values
    record_type = record_type.strip().lower()
    kind = _KINDS.get(record_type, _BOUNCE)
    if kind is None:
        return None
    if record_type not in _KINDS:
        return EventError(_PMTA, location, f"unknown record type {record_type!r}", _raw(row))
    recipient = address(rcpt.strip())
    if recipient is None and record_type not in _QUEUE_TYPES:
        return EventError(_PMTA, location, "no recipient address", _raw(row))
    time = parse_time(logged.strip())
    if time is None and logged.strip():
        return EventError(_PMTA, location, "unreadable timeLogged", _raw(row))
    status = status_of(dsn_status)
    if kind is _DELIVERED:
        # Nine lines in ten: built directly, without the classifier's call (a delivery's reply,
        # "250 ok", decides nothing and is not read).
        return Event(
            source=_PMTA,
            kind=_DELIVERED,
            recipient=recipient,
            outcome=_DELIVERED_RESULT.outcome,
            reason=_DELIVERED_RESULT.reason,
            rule_id=_DELIVERED_RESULT.rule_id,
            dedupe_id=dedupe_id(_PMTA, "\x1f".join(row)),
            location=location,
            sender=address(orig),
            time=time,
            queued_at=parse_time(queued.strip()),
            status=status,
            remote_mta=mta.split()[0].rstrip(".") if mta.strip() else None,
            stream=stream.strip() or None,
            ip=ip.strip() or None,
            pool=pool.strip() or None,
            vmta=vmta.strip() or None,
            job_id=job.strip() or env.strip() or None,
            message_id=message_id.strip() or None,
        )
    if record_type in ("rs", "remote-status"):
        kind = _REMOTE_STATUS.get(action.strip().lower(), _BOUNCE)
    if kind is _BOUNCE and (category.lower() == _EXPIRED_CATEGORY or status == "4.4.7"):
        kind = EventKind.EXPIRED
    diag = diagnostic(dsn_diag)
    reply_code, reply_status = parse_reply(diag)
    return make_event(
        _PMTA,
        kind,
        recipient=recipient,
        dedupe=dedupe_id(_PMTA, "\x1f".join(row)),
        location=location,
        sender=address(orig.strip()),
        time=time,
        queued_at=parse_time(queued.strip()),
        reply_code=reply_code,
        status=status or reply_status,
        diagnostic=diag,
        remote_mta=mta.split()[0].rstrip(".") if mta.strip() else None,
        vendor_category=category.strip() or None,
        feedback_type=feedback.strip() or None if kind is EventKind.COMPLAINT else None,
        stream=stream.strip() or None,
        ip=ip.strip() or None,
        pool=pool.strip() or None,
        vmta=vmta.strip() or None,
        job_id=job.strip() or env.strip() or None,
        message_id=message_id.strip() or None,
    )


def _count_delivery(values: tuple[str, ...], deliveries: dict[DeliveryKey, int]) -> bool:
    """Count a ``d`` record by its key; False when it is not readable (``_record`` then reports
    it, with the same checks as for the ``Event`` it would otherwise build)."""
    recipient = address(values[4].strip())
    if recipient is None:
        return False
    logged = values[1].strip()
    time = parse_time(logged)
    if time is None and logged:
        return False
    key = (
        _PMTA,
        time,
        recipient.rpartition("@")[2],
        _mta_host(values[8]),
        values[17].strip() or None,
        values[10].strip() or None,
        values[12].strip() or None,
        values[11].strip() or None,
    )
    deliveries[key] = deliveries.get(key, 0) + 1
    return True


@lru_cache(maxsize=4096)
def _mta_host(mta: str) -> str | None:
    # "mx1.example.net (192.0.2.7)": the host, as the Event's remote_mta (a file repeats them).
    return mta.split()[0].rstrip(".") if mta.strip() else None


def _raw(row: list[str]) -> str:
    return ",".join(row)
