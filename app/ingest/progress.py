"""The ingest's progress line on standard error, and its final summary.

On a terminal the line is redrawn at most twice a second; when standard error is not a terminal
(a systemd unit, a pipe) only the summary is written; ``quiet`` writes neither. Bad lines are
reported one per line (``file:line: why``, never the line itself: it holds addresses), the first
``MAX_REPORTED`` of them.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Final, TextIO

from events import EventError

MAX_REPORTED: Final = 20
REDRAW_S: Final = 0.5


@dataclass(slots=True)
class Totals:
    lines: int = 0
    events_new: int = 0
    duplicate: int = 0
    errors: int = 0
    offset: int = 0
    size: int | None = None


class Progress:
    def __init__(self, *, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.live = not quiet and self.stream.isatty()
        self.started = time.monotonic()
        self._drawn = 0.0
        self._reported = 0

    def errors(self, errors: list[EventError]) -> None:
        for error in errors:
            if self._reported < MAX_REPORTED:
                self._clear()
                self.stream.write(f"{error.location}: {error.reason}\n")
            self._reported += 1
        if (
            errors
            and self._reported >= MAX_REPORTED
            and self._reported - len(errors) < MAX_REPORTED
        ):
            self.stream.write("(further bad lines are counted, not listed)\n")

    def update(self, totals: Totals) -> None:
        now = time.monotonic()
        if not self.live or now - self._drawn < REDRAW_S:
            return
        self._drawn = now
        self.stream.write("\r" + self._line(totals) + "\x1b[K")
        self.stream.flush()

    def finish(self, totals: Totals) -> None:
        if self.quiet:
            return
        self._clear()
        self.stream.write(self._line(totals) + "\n")
        self.stream.flush()

    def _clear(self) -> None:
        if self.live and self._drawn:
            self.stream.write("\r\x1b[K")

    def _line(self, t: Totals) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        share = f" ({100 * t.offset / t.size:.1f} %)" if t.size else ""
        return (
            f"{t.lines:,} lines{share}, {t.lines / elapsed:,.0f} lines/s; events: "
            f"{t.events_new:,} new, {t.duplicate:,} duplicate; {t.errors:,} bad lines"
        )
