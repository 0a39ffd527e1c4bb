"""Property tests: nothing but ``ParseError`` ever escapes ``analyse_message``, and what comes
back is safe to act on.

Inputs: arbitrary bytes, and real samples damaged by ``tests/dsn/mutations.py`` (byte flips,
truncation, duplicated header fields, corrupt boundaries, junk charsets and encodings, huge
lines, mixed line endings, splices, deep wrapping).  Properties of every analysis:

* it serialises as the JSON the service stores, in UTF-8 (a lone surrogate from an 8-bit byte
  would be refused by PostgreSQL and orjson);
* every recipient is a lower-case address, at most ``MAX_RECIPIENTS`` of them;
* ``hard`` only with a rule behind it and an address-level reason (a false hard bounce
  suppresses a real person for good);
* it finishes well inside the parse worker's time cap (the deadline is 5 s for inputs that
  take milliseconds: only a super-linear path misses it).
"""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from classifiers import HARD_REASONS, Reason
from dsn import MAX_RECIPIENTS, MessageAnalysis, ParseError, analyse_message
from tests.dsn.mutations import mutated_samples

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "samples").rglob("*.eml"))
SAMPLE_BYTES = [p.read_bytes() for p in SAMPLES] or [b"From: a@example.org\n\nhello\n"]
DEADLINE = timedelta(seconds=5)

analyse_message(SAMPLE_BYTES[0])  # load the rules now, not inside the first timed example


def check(raw: bytes) -> None:
    with contextlib.suppress(ParseError):
        check_analysis(analyse_message(raw))


def check_analysis(analysis: MessageAnalysis) -> None:
    assert isinstance(analysis, MessageAnalysis)
    json.dumps(analysis.to_json(), sort_keys=True).encode("utf-8")
    assert len(analysis.results) <= MAX_RECIPIENTS
    for result in analysis.results:
        assert "@" in result.recipient
        assert result.recipient == result.recipient.lower()
        if result.outcome == "hard":
            assert result.rule_id != "unclassified", result
            assert Reason(result.reason) in HARD_REASONS, result


@settings(max_examples=200, deadline=DEADLINE, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_random_bytes(raw: bytes) -> None:
    check(raw)


@settings(max_examples=200, deadline=DEADLINE, suppress_health_check=[HealthCheck.too_slow])
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
    check(bytes(data))


@settings(
    max_examples=250,
    deadline=DEADLINE,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated_samples())
def test_structurally_damaged_samples(raw: bytes) -> None:
    check(raw)


def test_line_endings_do_not_change_the_analysis() -> None:
    """LF, CRLF and CR-only copies of every sample read the same."""
    for raw in SAMPLE_BYTES:
        lf = raw.replace(b"\r\n", b"\n")
        expected = analyse_message(raw).to_json()
        for copy in (lf, lf.replace(b"\n", b"\r\n"), lf.replace(b"\n", b"\r")):
            assert analyse_message(copy).to_json() == expected
