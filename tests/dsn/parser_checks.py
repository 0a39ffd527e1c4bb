"""Checks shared by the per-family parser tests (MTA families, providers, appliances).

Each test module keeps its own table of golden samples and calls these: a sample is claimed by
its parser and read to the expected recipients, statuses and words; a record bomb (one head,
the same record a hundred thousand times) parses in bounded time to at most MAX_RECIPIENTS.
"""

from __future__ import annotations

import time
from pathlib import Path

from dsn import MAX_RECIPIENTS, analyse_message

__all__ = [
    "ENDINGS",
    "SAMPLES",
    "Expected",
    "assert_bomb_is_bounded",
    "assert_reads_format",
    "record_bomb",
]

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "bounce"
ENDINGS = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}
# [(recipient, status, words the diagnostic must contain)]
Expected = list[tuple[str, str | None, str]]


def assert_reads_format(raw: bytes, mta: str, expected: Expected) -> None:
    """``mta`` claims ``raw`` as a bounce and finds exactly the ``expected`` recipients, failed."""
    analysis = analyse_message(raw)
    assert analysis.mta == mta
    assert analysis.kind == "bounce"
    got = [(r.recipient, r.status) for r in analysis.results]
    assert got == [(recipient, status) for recipient, status, _ in expected]
    for result, (_, _, words) in zip(analysis.results, expected, strict=True):
        assert words in result.diagnostic
        assert result.action == "failed"


def record_bomb(head: bytes, line: bytes, count: int) -> bytes:
    """``head`` and then ``line % i`` for i below ``count``."""
    return head + b"".join(line % i for i in range(count))


def assert_bomb_is_bounded(raw: bytes, mta: str) -> None:
    """``mta`` reads the bomb in under two CPU seconds and keeps at most MAX_RECIPIENTS."""
    started = time.process_time()
    analysis = analyse_message(raw)
    assert time.process_time() - started < 2.0
    assert analysis.mta == mta
    assert 1 <= len(analysis.results) <= MAX_RECIPIENTS
    assert len(analysis.results[0].diagnostic) <= 1000
