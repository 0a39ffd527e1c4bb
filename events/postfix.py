"""Postfix mail logs: delivery status lines joined by queue id with the ``qmgr`` line's sender.

From Postfix's source (``src/global/log_adhoc.c``, ``src/qmgr/qmgr_active.c``) and
``postconf(5)``/``DEBUG_README``: a delivery agent logs, per recipient,

    QUEUEID: to=<rcpt>, [orig_to=<addr>, ]relay=host[ip]:port, delay=.., delays=.., dsn=X.Y.Z,
    status=sent|deferred|bounced (reply or reason)

and the queue manager logs ``QUEUEID: from=<sender>, size=N, nrcpt=N (queue active)`` when the
message enters the active queue, ``QUEUEID: from=<sender>, status=expired, returned to sender`` when
it gives up (no recipients named: the ones still deferred are the ones that expired), and
``QUEUEID: removed`` when the message leaves the queue. The prefix is classic syslog
(``Jan  5 10:00:00 host postfix/smtp[123]:``, no year: the caller gives one) or RFC 3339
(``2026-01-05T10:00:00.123456+00:00 host postfix/smtp[123]:``); the program may carry a
multi-instance name (``postfix-out/smtp``) or a service name (``postfix/submission/smtp``).

``PostfixJoiner`` is the streaming form: it remembers each queue id's sender and deferred
recipients (bounded) until ``removed``. Lines that are not delivery status lines are ignored;
a status line it cannot read is an error record.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from events.classify import make_event
from events.fields import address, parse_reply, parse_time
from events.model import Event, EventError, EventKind, Source, dedupe_id

__all__ = ["PostfixJoiner", "parse_postfix"]

_PREFIX: Final = re.compile(
    r"^(?:(?P<rfc3339>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)"
    r"|(?P<syslog>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d))"
    r"\s+(?P<host>\S+)\s+(?P<program>postfix[\w.-]*(?:/[\w.-]+)+)\[\d+\]:\s+"
    r"(?P<qid>[0-9A-Za-z]{5,20}):\s+(?P<rest>.*)$"
)
_FIELD: Final = re.compile(r"(?:^|,\s)(\w+)=(<[^>]*>|[^,\s]*)")
_STATUS: Final = re.compile(r",\s*status=(\w+)(?:\s+\((?P<text>.*)\)\s*)?$")
# relay=mx.example.net[192.0.2.1]:25 -- the address is the remote MX's, not our sending IP.
_RELAY_HOST: Final = re.compile(r"^([^\[\s]+)")
_SAID: Final = re.compile(r"^host \S+ said:\s*")
_IN_REPLY: Final = re.compile(r"\s*\(in reply to [^)]*\)\s*$")
_MONTHS: Final = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_KINDS: Final = {
    "sent": EventKind.DELIVERED,
    "bounced": EventKind.BOUNCE,
    "deferred": EventKind.DEFERRED,
}
# Queue ids remembered at most; a log starting mid-way never sees "removed" for the first ones.
MAX_QUEUE_IDS: Final = 100_000
# Queue ids kept in ``PostfixJoiner.state`` (the newest): saved with every batch's read offset,
# so bounded; a message older than that many later ones is not waiting for its status lines.
MAX_SAVED_QUEUE_IDS: Final = 5_000


@dataclass(slots=True)
class _Message:
    sender: str | None = None
    deferred: dict[str, tuple[str | None, str]] = field(default_factory=dict)


class PostfixJoiner:
    """Reads Postfix log lines one at a time and yields the events each completes."""

    def __init__(self, origin: str = "-", *, year: int | None = None) -> None:
        self.origin = origin
        # Classic syslog stamps have no year: take the caller's (the file's), else this year.
        self.year = year if year is not None else datetime.now(UTC).year
        self._queue: OrderedDict[str, _Message] = OrderedDict()

    def state(self) -> str | None:
        """What the joiner remembers (the newest ``MAX_SAVED_QUEUE_IDS`` queue ids: sender and
        recipients still deferred), as JSON for ``restore``; None when it remembers nothing."""
        if not self._queue:
            return None
        queue = self._queue
        skip = max(0, len(queue) - MAX_SAVED_QUEUE_IDS)
        saved = [
            [qid, m.sender, [[r, dsn, text] for r, (dsn, text) in m.deferred.items()]]
            for i, (qid, m) in enumerate(queue.items())
            if i >= skip
        ]
        return json.dumps({"postfix_queue": saved}, separators=(",", ":"))

    def restore(self, state: str) -> None:
        """Remember again what ``state`` says (added to what is remembered now); a state that
        is not one of ``state()``'s is ignored."""
        try:
            saved = json.loads(state)["postfix_queue"]
            for qid, sender, deferred in saved:
                message = self._message(str(qid))
                message.sender = sender if isinstance(sender, str) else None
                message.deferred.update({str(r): (dsn, str(text)) for r, dsn, text in deferred})
        except (ValueError, TypeError, KeyError):
            return

    def _message(self, qid: str) -> _Message:
        message = self._queue.get(qid)
        if message is None:
            message = self._queue[qid] = _Message()
            if len(self._queue) > MAX_QUEUE_IDS:
                self._queue.popitem(last=False)
        return message

    def _time(self, match: re.Match[str]) -> datetime | None:
        if match.group("rfc3339"):
            return parse_time(match.group("rfc3339"))
        stamp = match.group("syslog")
        month = _MONTHS.get(stamp[:3])
        if month is None:
            return None
        try:
            return datetime(
                self.year,
                month,
                int(stamp[4:6]),
                int(stamp[7:9]),
                int(stamp[10:12]),
                int(stamp[13:15]),
                tzinfo=UTC,
            )
        except ValueError:
            return None

    def feed(self, line: str, number: int) -> list[Event | EventError]:
        """The events (or errors) line ``number`` completes; most lines complete none."""
        line = line.rstrip("\r\n")
        if "postfix" not in line:
            return []
        match = _PREFIX.match(line)
        if match is None:
            return []
        qid, rest = match.group("qid"), match.group("rest")
        location = f"{self.origin}:{number}"
        if rest == "removed":
            self._queue.pop(qid, None)
            return []
        if rest.startswith("from="):
            return self._from_line(qid, rest, match, location)
        if not rest.startswith("to="):
            return []
        status = _STATUS.search(rest)
        if status is None:
            return [EventError(Source.POSTFIX, location, "a to= line without status=", line)]
        kind = _KINDS.get(status.group(1))
        if kind is None:
            # status=expired on a to= line does not occur; others (e.g. "undeliverable" in
            # address verification) are not deliveries.
            return []
        fields = dict(_FIELD.findall(rest[: status.start()]))
        recipient = address(fields.get("to", ""))
        if recipient is None:
            return [EventError(Source.POSTFIX, location, "unreadable to= address", line)]
        message = self._message(qid)
        relay = fields.get("relay", "")
        dsn = fields.get("dsn") or None
        text = status.group("text") or ""
        if kind is EventKind.DEFERRED:
            message.deferred[recipient] = (dsn, text)
        else:
            message.deferred.pop(recipient, None)
        return [
            self._event(kind, qid, recipient, message.sender, dsn, text, relay, match, location)
        ]

    def _from_line(
        self, qid: str, rest: str, match: re.Match[str], location: str
    ) -> list[Event | EventError]:
        fields = dict(_FIELD.findall(rest))
        message = self._message(qid)
        sender = fields.get("from", "<>")
        message.sender = address(sender)
        if fields.get("status") != "expired":
            return []
        out: list[Event | EventError] = []
        for recipient, (dsn, text) in message.deferred.items():
            out.append(
                self._event(
                    EventKind.EXPIRED,
                    qid,
                    recipient,
                    message.sender,
                    dsn,
                    text,
                    "",
                    match,
                    location,
                )
            )
        message.deferred.clear()
        return out

    def _event(
        self,
        kind: EventKind,
        qid: str,
        recipient: str,
        sender: str | None,
        dsn: str | None,
        text: str,
        relay: str,
        match: re.Match[str],
        location: str,
    ) -> Event:
        reply_text = _IN_REPLY.sub("", _SAID.sub("", text))
        reply_code, reply_status = parse_reply(reply_text)
        host_match = _RELAY_HOST.match(relay)
        host = host_match.group(1) if host_match else None
        time = self._time(match)
        return make_event(
            Source.POSTFIX,
            kind,
            recipient=recipient,
            dedupe=dedupe_id(Source.POSTFIX, match.group("host"), qid, recipient, kind, time),
            location=location,
            sender=sender,
            time=time,
            reply_code=reply_code,
            status=dsn or reply_status,
            diagnostic=reply_text,
            remote_mta=host if host not in (None, "none", "local", "virtual") else None,
        )


def parse_postfix(
    lines: Iterable[str], origin: str = "-", *, year: int | None = None
) -> Iterator[Event | EventError]:
    """Every event in a Postfix log (a file, or a pipe read line by line)."""
    joiner = PostfixJoiner(origin, year=year)
    for number, line in enumerate(lines, 1):
        yield from joiner.feed(line, number)
