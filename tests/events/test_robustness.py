"""Bad input never stops a parser: any body, any line, any JSON shape yields events and errors.

Mutations replace parts of the golden samples with arbitrary JSON values (wrong types where a
vendor's field should be), and arbitrary text is fed to the log parsers.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events import LOG_PARSERS, WEBHOOK_PARSERS, Event, EventError, PostfixJoiner

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "events"
WEBHOOK_SAMPLES = sorted(p for p in SAMPLES.glob("*.json") if not p.name.endswith(".expected.json"))

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*prefix, index))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(copy[head], rest, new)
    return copy


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(WEBHOOK_SAMPLES), st.data(), JSON)
def test_webhook_parsers_survive_mutated_samples(path: Path, data: st.DataObject, new: Any) -> None:
    source = path.name.split("-")[0]
    original = json.loads(path.read_text())
    if isinstance(original, dict) and original.get("Type") == "Notification":
        with contextlib.suppress(ValueError):  # mutate inside the envelope
            original["Message"] = json.loads(original["Message"])
        target = data.draw(st.sampled_from(_paths(original)))
        mutated = _replace(original, target, new)
        if isinstance(mutated, dict) and not isinstance(mutated.get("Message"), str):
            mutated["Message"] = json.dumps(mutated.get("Message"))
    else:
        target = data.draw(st.sampled_from(_paths(original)))
        mutated = _replace(original, target, new)
    batch = WEBHOOK_PARSERS[source](json.dumps(mutated), "req")
    assert all(isinstance(e, Event) for e in batch.events)
    assert all(isinstance(e, EventError) for e in batch.errors)
    for event in batch.events:
        event.to_json()


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(WEBHOOK_PARSERS)), st.binary(max_size=200) | JSON.map(json.dumps))
def test_webhook_parsers_survive_any_body(source: str, body: bytes | str) -> None:
    WEBHOOK_PARSERS[source](body, "req")


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(LOG_PARSERS)), st.lists(st.text(max_size=120), max_size=8))
def test_log_parsers_survive_any_lines(source: str, lines: list[str]) -> None:
    header = {"pmta": ["type,timeLogged,rcpt,dsnStatus,dsnDiag,bounceCat"], "postfix": []}
    list(LOG_PARSERS[source]([*header.get(source, []), *lines], "log"))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="<>=,;:() abc@.x5-Ttos", max_size=150))
def test_postfix_status_lines_with_any_tail(tail: str) -> None:
    joiner = PostfixJoiner("log", year=2026)
    joiner.feed("Jan  5 10:00:00 mx postfix/smtp[1]: ABCDE12345: to=" + tail, 1)
    joiner.feed("Jan  5 10:00:00 mx postfix/qmgr[1]: ABCDE12345: from=" + tail, 2)
