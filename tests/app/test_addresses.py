"""One normalisation everywhere; the fast path agrees exactly with flanker's parse."""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.addresses import (
    InvalidAddress,
    fast_path_accepts,
    flanker_normalise,
    normalise_address,
    try_normalise,
    try_normalise_many,
)

ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-"
LABEL = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?", fullmatch=True)
# Strings shaped like addresses, including near-misses the fast path must reject.
near = st.builds(
    lambda local, labels, junk: f"{local}@{'.'.join(labels)}{junk}",
    st.text(alphabet=ATEXT + '."\\ ()<>,;:[]@', min_size=0, max_size=24),
    st.lists(LABEL | st.text(alphabet="abc-_.", max_size=5), min_size=1, max_size=4),
    st.sampled_from(["", "", "", ".", "-", " ", ">", "\n"]),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near | st.emails() | st.text(max_size=40))
@example("0@0.a---a")  # a reserved "--" label: IDNA refuses it (found by this test)
def test_fast_path_agrees_with_flanker(raw: str) -> None:
    if fast_path_accepts(raw):
        assert flanker_normalise(raw) == raw.lower(), raw
    assert try_normalise(raw) == flanker_normalise(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(near | st.emails() | st.text(max_size=40) | st.integers() | st.none(), max_size=20))
def test_batch_normalisation_is_the_single_one_in_place(raws: list[object]) -> None:
    """The batch check's inlined fast path answers as ``try_normalise`` does, slot by slot."""
    expected = [try_normalise(r) if isinstance(r, str) else None for r in raws]
    assert try_normalise_many(raws) == expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.emails(), min_size=1, max_size=30),
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=29), near | st.text(max_size=40)),
        max_size=2,
    ),
)
@example(["a@example.com"], [(0, "a@example.com\nb@example.com")])
@example(["a@example.com", "b@example.com"], [(1, "B@ab--cd.example")])
@example(["a@example.com"], [(0, "a" * 250 + "@example.com")])
def test_a_batch_of_plain_addresses_normalises_as_each_does(
    emails: list[str], swaps: list[tuple[int, str]]
) -> None:
    """Batches that are (nearly) all plain addresses, which the batch check tests in one match:
    each slot still gets what ``try_normalise`` gives it."""
    raws = list(emails)
    for at, raw in swaps:
        raws[at % len(raws)] = raw
    assert try_normalise_many(raws) == [try_normalise(r) for r in raws]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("User@Example.COM", "user@example.com"),
        ("  user@example.com ", "user@example.com"),
        ("<user@example.com>", "user@example.com"),
        ("Jane Doe <Jane.Doe@Example.com>", "jane.doe@example.com"),
        ("user@bücher.example", "user@xn--bcher-kva.example"),
        ("user@XN--BCHER-KVA.example", "user@xn--bcher-kva.example"),
        ("a+tag@example.com", "a+tag@example.com"),
    ],
)
def test_normalises(raw: str, expected: str) -> None:
    assert normalise_address(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "plain",
        "a@b",
        "a..b@example.com",
        ".a@example.com",
        "a@-x.example",
        "a@@example.com",
        "a@example.com\r\nBcc: x@example.com",
        "x" * 300 + "@example.com",
    ],
)
def test_rejects_with_a_reason(raw: str) -> None:
    with pytest.raises(InvalidAddress) as info:
        normalise_address(raw)
    assert info.value.why
    assert try_normalise(raw) is None


def test_junk_input_is_not_copied_into_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """flanker's lexer would log a warning with the input for every character it cannot read."""
    junk = "a\x01b\x7f<marker-in-the-log@example.com"
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(InvalidAddress):
            normalise_address(junk)
        assert flanker_normalise(junk) is None
    assert not any("marker-in-the-log" in r.getMessage() for r in caplog.records)
