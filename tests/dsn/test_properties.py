"""Property tests: nothing but ``ParseError`` ever escapes ``analyse_message``."""

from __future__ import annotations

import contextlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsn import ParseError, analyse_message

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "samples").rglob("*.eml"))
SAMPLE_BYTES = [p.read_bytes() for p in SAMPLES] or [b"From: a@example.org\n\nhello\n"]


def _analyse(raw: bytes) -> None:
    with contextlib.suppress(ParseError):
        analyse_message(raw)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_random_bytes(raw: bytes) -> None:
    _analyse(raw)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SAMPLE_BYTES),
    st.lists(st.tuples(st.integers(min_value=0), st.binary(max_size=16)), max_size=8),
    st.integers(min_value=0),
)
def test_mutated_samples(raw: bytes, edits: list[tuple[int, bytes]], cut: int) -> None:
    data = bytearray(raw)
    for position, chunk in edits:
        at = position % (len(data) + 1)
        data[at : at + len(chunk)] = chunk
    if cut % 3 == 0 and data:
        data = data[: cut % len(data)]
    _analyse(bytes(data))
