"""Per-source decoders that keep what a log's lines share across batches.

A log arrives in batches of lines; what one line means can depend on an earlier one: PowerMTA's
header line names the columns of every record after it (and may change mid-file), Postfix's
``qmgr`` line carries the sender of the delivery lines that follow. A decoder keeps that state
between batches, numbers lines from the file's start (so a bad line is reported as ``file:line``),
and exposes the state a resumed reader needs (``context``: the PowerMTA header in effect).
"""

from __future__ import annotations

import csv
from typing import Final, Protocol

import events
from events import Batch


class Decoder(Protocol):
    """Turns consecutive lines of one log into events and errors."""

    context: str | None

    def feed(self, lines: list[str], first_line: int, batch: Batch) -> None:
        """Adds the events and errors of ``lines`` (without line ends; line ``first_line``
        first) to ``batch``."""
        ...


class PmtaDecoder:
    """PowerMTA accounting CSV; ``context`` is the header line in effect (saved with the offset,
    so a resumed read knows the columns without re-reading the file's start).

    ``count_deliveries``: ``d`` records are counted into ``Batch.deliveries`` by key instead of
    an ``Event`` each (the sink must then count them: ``app.events.EventStore`` does)."""

    def __init__(
        self, origin: str, context: str | None = None, *, count_deliveries: bool = False
    ) -> None:
        self.origin = origin
        self.context = context
        self.count_deliveries = count_deliveries

    def feed(self, lines: list[str], first_line: int, batch: Batch) -> None:
        header = _header(self.context) if self.context else None
        deliveries = batch.deliveries if self.count_deliveries else None
        batch.add(
            events.parse_pmta(
                lines, self.origin, header=header, first_line=first_line, deliveries=deliveries
            )
        )
        for line in lines:
            if _is_header(line):
                self.context = line


def _is_header(line: str) -> bool:
    # A header line starts with "type" (quoted or not); records start with their type ("d",
    # "b", "t", "tq", ...), so only a few lines get the CSV check.
    start = line[:6].lower()
    if not (start.startswith("type,") or start == '"type"'):
        return False
    return _header(line)[0].strip().lower() == "type"


def _header(line: str) -> list[str]:
    return next(csv.reader([line]), [""])


class PostfixDecoder:
    """Postfix mail log: the joiner remembers each queue id's sender across batches; ``context``
    is what it remembers (``PostfixJoiner.state``), saved with the offset, so a restart between
    a ``qmgr`` line and the status lines keeps the sender. Setting it adds the saved queue ids to
    the ones remembered (None adds nothing: a rotated-to file still joins the old one's)."""

    def __init__(self, origin: str, year: int | None = None) -> None:
        self._joiner = events.PostfixJoiner(origin, year=year)

    @property
    def context(self) -> str | None:
        return self._joiner.state()

    @context.setter
    def context(self, value: str | None) -> None:
        if value:
            self._joiner.restore(value)

    def feed(self, lines: list[str], first_line: int, batch: Batch) -> None:
        feed = self._joiner.feed
        for number, line in enumerate(lines, first_line):
            batch.add(feed(line, number))


class KumomtaDecoder:
    """KumoMTA JSON log: one record per line, nothing shared between lines."""

    context: str | None = None

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def feed(self, lines: list[str], first_line: int, batch: Batch) -> None:
        batch.add(events.parse_kumomta_lines(lines, self.origin, first_line=first_line))


SOURCES: Final = ("pmta", "postfix", "kumomta")


def make_decoder(
    source: str,
    origin: str,
    *,
    context: str | None = None,
    year: int | None = None,
    count_deliveries: bool = False,
) -> Decoder:
    """The decoder of ``source`` (one of ``SOURCES``), resumed with a saved ``context``;
    ``count_deliveries``: see ``PmtaDecoder`` (the other sources make an ``Event`` of each)."""
    if source == "pmta":
        return PmtaDecoder(origin, context, count_deliveries=count_deliveries)
    if source == "postfix":
        return PostfixDecoder(origin, year)
    if source == "kumomta":
        return KumomtaDecoder(origin)
    raise ValueError(f"unknown log source {source!r}")
