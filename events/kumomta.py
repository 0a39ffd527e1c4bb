"""KumoMTA log records (JSON): from a log file (one record per line) or a log hook (object or array).

From the KumoMTA reference, "Log Record": each record has ``type`` (``Reception``, ``Delivery``,
``Bounce``, ``TransientFailure``, ``Expiration``, ``AdminBounce``, ``OOB``, ``Feedback``,
``Rejection``, ...), ``id``, ``sender``, ``recipient``, ``queue``, ``site``, ``egress_pool``,
``egress_source``, ``response`` (``code``, ``enhanced_code`` as ``{class, subject, detail}``,
``content``), ``peer_address`` (``name``, ``addr``), ``timestamp``, ``created``,
``bounce_classification``, ``feedback_report``, ``meta``, ``headers``. Recent versions give
``recipient`` as an array (one message, several recipients): one event each.

Mapping: Delivery -> delivered, Bounce and OOB (an out-of-band DSN) -> bounce, TransientFailure ->
deferred (never hard), Expiration -> expired, AdminBounce -> dropped (an operator purged the
queue: nothing about the recipient), Feedback -> complaint. Reception, Rejection (our own
listener refusing a message), Delayed and the other bookkeeping types are not recipient events
and are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, Final

from events.classify import make_event
from events.fields import address, obj, parse_time, text, to_int
from events.model import Batch, Event, EventError, EventKind, Source, dedupe_id

__all__ = ["parse_kumomta_lines", "parse_kumomta_record", "parse_kumomta_request"]

_KINDS: Final[dict[str, EventKind]] = {
    "delivery": EventKind.DELIVERED,
    "bounce": EventKind.BOUNCE,
    "oob": EventKind.BOUNCE,
    "transientfailure": EventKind.DEFERRED,
    "expiration": EventKind.EXPIRED,
    "adminbounce": EventKind.DROPPED,
    "feedback": EventKind.COMPLAINT,
}
_SKIPPED: Final = frozenset(
    {"reception", "rejection", "delayed", "adminrebind", "deferredinjection", "any"}
)


def _enhanced(value: Any) -> str | None:
    if isinstance(value, dict):
        parts = [to_int(value.get(k)) for k in ("class", "subject", "detail")]
        if all(p is not None for p in parts):
            return ".".join(str(p) for p in parts)
        return None
    return text(value)


def parse_kumomta_record(
    record: Any, location: str, *, stream_meta: str = "stream"
) -> list[Event | EventError]:
    """The events of one log record (one per recipient); an error record for a bad one."""
    if not isinstance(record, dict):
        return [EventError(Source.KUMOMTA, location, "a log record must be a JSON object")]
    record_type = text(record.get("type"))
    if record_type is None:
        return [EventError(Source.KUMOMTA, location, "no type", _excerpt(record))]
    key = record_type.lower()
    if key in _SKIPPED:
        return []
    kind = _KINDS.get(key)
    if kind is None:
        return [
            EventError(Source.KUMOMTA, location, f"unknown type {record_type!r}", _excerpt(record))
        ]
    raw_recipients = record.get("recipient")
    if isinstance(raw_recipients, str):
        raw_recipients = [raw_recipients]
    if not isinstance(raw_recipients, list) or not raw_recipients:
        return [EventError(Source.KUMOMTA, location, "no recipient", _excerpt(record))]
    response = obj(record.get("response"))
    peer = obj(record.get("peer_address"))
    meta = obj(record.get("meta"))
    headers = obj(record.get("headers"))
    feedback = record.get("feedback_report")
    feedback_type = None
    if isinstance(feedback, dict):
        feedback_type = text(feedback.get("feedback_type"))
    time = parse_time(record.get("timestamp"))
    out: list[Event | EventError] = []
    for index, raw in enumerate(raw_recipients):
        where = location if len(raw_recipients) == 1 else f"{location}#{index}"
        recipient = address(raw)
        if recipient is None:
            out.append(EventError(Source.KUMOMTA, where, f"bad recipient {str(raw)[:80]!r}"))
            continue
        out.append(
            make_event(
                Source.KUMOMTA,
                kind,
                recipient=recipient,
                dedupe=dedupe_id(
                    Source.KUMOMTA,
                    record.get("id"),
                    record_type,
                    recipient,
                    record.get("timestamp"),
                    record.get("num_attempts"),
                ),
                location=where,
                sender=address(record.get("sender")),
                time=time,
                queued_at=parse_time(record.get("created")),
                reply_code=to_int(response.get("code")),
                status=_enhanced(response.get("enhanced_code")),
                diagnostic=text(response.get("content")),
                remote_mta=text(peer.get("name")),
                vendor_category=text(record.get("bounce_classification")),
                feedback_type=feedback_type,
                stream=text(meta.get(stream_meta)),
                ip=_host(text(obj(record.get("source_address")).get("address"))),
                pool=text(record.get("egress_pool")),
                vmta=text(record.get("egress_source")),
                job_id=text(meta.get("campaign")),
                message_id=text(headers.get("Message-ID") or headers.get("Message-Id")),
            )
        )
    return out


def parse_kumomta_request(body: bytes | str, request_id: str = "-") -> Batch:
    """A log-hook request body: one record, or an array of records (batched hooks)."""
    batch = Batch()
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        batch.errors.append(EventError(Source.KUMOMTA, request_id, f"bad JSON: {exc}"))
        return batch
    records = data if isinstance(data, list) else [data]
    for index, record in enumerate(records):
        where = request_id if not isinstance(data, list) else f"{request_id}#{index}"
        batch.add(parse_kumomta_record(record, where))
    return batch


def parse_kumomta_lines(
    lines: Iterable[str], origin: str = "-", *, first_line: int = 1
) -> Iterator[Event | EventError]:
    """A KumoMTA log file: one JSON record per line (blank lines skipped); ``first_line`` is the
    number of the first line given (a file resumed at an offset)."""
    for number, raw in enumerate(lines, first_line):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        location = f"{origin}:{number}"
        try:
            record = json.loads(line)
        except ValueError as exc:
            yield EventError(Source.KUMOMTA, location, f"bad JSON: {exc}", line)
            continue
        yield from parse_kumomta_record(record, location)


def _host(address: str | None) -> str | None:
    """The IP of ``source_address.address``, which carries a port (``198.51.100.1:0``)."""
    if address is None:
        return None
    if address.startswith("["):  # [2001:db8::1]:0
        return address[1:].partition("]")[0] or None
    if address.count(":") == 1:
        return address.partition(":")[0] or None
    return address


def _excerpt(record: Any) -> str:
    try:
        return json.dumps(record, sort_keys=True)[:200]
    except (TypeError, ValueError):
        return ""
