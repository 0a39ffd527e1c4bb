"""Whatever bytes arrive, parsing returns a report or None, or raises ArfParseError.

Besides random bytes and token-steered edits, real samples are damaged structurally
(``tests/dsn/mutations.py``: corrupt boundaries, duplicated fields, junk charsets, huge lines,
deep wrapping ...).  A report's recipients are lower-case addresses, never a redacted stand-in,
at most ``MAX_RECIPIENTS``; its text is storable UTF-8; and parsing takes milliseconds, so the
5 s deadline only catches a super-linear path.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arf import ArfParseError, ComplaintReport, parse_bytes
from arf.recipients import MAX_RECIPIENTS
from tests.dsn.mutations import ALL_SAMPLES, ARF_SAMPLES, mutated_samples

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "samples" / "arf").glob("*.eml"))
SAMPLE_BYTES = [p.read_bytes() for p in SAMPLES]

# Fragments that steer mutations towards the paths the parser takes.
TOKENS = [
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b"--",
    b":",
    b";",
    b"<",
    b">",
    b"@",
    b'"',
    b"=?utf-8?b?",
    b"=?unknown-charset?q?x?=",
    b"Content-Type: multipart/report; report-type=feedback-report; boundary=",
    b"Content-Type: message/feedback-report\n\n",
    b"Content-Type: message/rfc822\n\n",
    b"Content-Type: text/rfc822-headers\n\n",
    b"Content-Transfer-Encoding: base64\n",
    b"Content-Transfer-Encoding: quoted-printable\n",
    b"charset=x-unknown",
    b"Original-Rcpt-To: ",
    b"Feedback-Type: ",
    b"X-HmXmrOriginalRecipient: ",
    b"\xff\xfe\x80",
    b"\x00",
]


def check(raw: bytes) -> None:
    try:
        result = parse_bytes(raw)
    except ArfParseError:
        return
    assert result is None or isinstance(result, ComplaintReport)
    if result is not None:
        json.dumps(dataclasses.asdict(result)).encode("utf-8")
        assert len(result.addresses) <= MAX_RECIPIENTS
        for recipient in result.recipients:
            assert recipient.address is None or "@" in recipient.address
            assert recipient.address is None or recipient.address == recipient.address.lower()
            assert not (recipient.redacted and recipient.address is not None)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(raw: bytes) -> None:
    check(raw)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SAMPLE_BYTES),
    st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=1, exclude_max=True),
            st.integers(min_value=0, max_value=40),
            st.one_of(st.sampled_from(TOKENS), st.binary(max_size=20)),
        ),
        max_size=8,
    ),
)
def test_mutated_samples(sample: bytes, edits: list[tuple[float, int, bytes]]) -> None:
    raw = sample
    for where, cut, insert in edits:
        at = int(where * len(raw))
        raw = raw[:at] + insert + raw[at + cut :]
    check(raw)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SAMPLE_BYTES),
    st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_truncated_samples(sample: bytes, where: float) -> None:
    check(sample[: int(where * len(sample))])


DEADLINE = timedelta(seconds=5)


@settings(
    max_examples=150,
    deadline=DEADLINE,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated_samples(ARF_SAMPLES))
def test_structurally_damaged_reports(raw: bytes) -> None:
    check(raw)


@settings(
    max_examples=50,
    deadline=DEADLINE,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated_samples(ALL_SAMPLES))
def test_structurally_damaged_other_mail(raw: bytes) -> None:
    check(raw)


@pytest.mark.parametrize(
    "path", ALL_SAMPLES, ids=[p.relative_to(p.parents[1]).as_posix() for p in ALL_SAMPLES]
)
def test_every_sample_parses(path: Path) -> None:
    """Bounces, negatives and hostile samples too (``negative/nested-01``: 1,000 nested
    multiparts made the standard library's parser raise RecursionError)."""
    check(path.read_bytes())


def test_an_encoded_subject_whose_charset_name_is_not_ascii_is_kept_as_written() -> None:
    # Found by the mutation test above: the standard library raises CharsetError (not a
    # UnicodeError) for a charset name with 8-bit bytes in an RFC 2047 encoded word.
    raw = (SAMPLES[0].parent / "aol-01.eml").read_bytes()
    damaged = raw.replace(b"=?utf-8?q?Your", "=?\u00ff\u00feutf-8?q?Your".encode("latin-1"))
    assert damaged != raw
    report = parse_bytes(damaged)
    assert isinstance(report, ComplaintReport)
    assert report.original_subject is not None
    assert report.original_subject.endswith("?=")
