"""Golden replay: run every ``samples/**/*.eml`` through parse + classify and compare it with the
``.expected.json`` beside it.

A rule or parser change that moves a golden outcome shows up here as a list of differences
(``stoplist rules check`` fails on any). ``compare`` is pure; ``replay`` only reads the sample
folder it is given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsn.analysis import analyse_message
from dsn.errors import ParseError

# Top-level keys whose change means the message is read differently; "file" is only a label.
_TOP_KEYS = ("kind", "mta", "error", "ref_token")


@dataclass(frozen=True, slots=True)
class GoldenDifference:
    """One way a sample's analysis today differs from its golden file."""

    sample: str  # path relative to the samples folder
    what: str  # "mta", "results[0].outcome", "expected file", ...
    expected: object
    actual: object

    def __str__(self) -> str:
        return f"{self.sample}: {self.what}: expected {self.expected!r}, got {self.actual!r}"


def expected_path(eml: Path) -> Path:
    """``name.eml`` -> ``name.expected.json`` beside it."""
    return eml.with_name(eml.name[: -len(".eml")] + ".expected.json")


def analyse_sample(raw: bytes, name: str) -> dict[str, Any]:
    """The golden form of one message: ``to_json`` with keys sorted, as the golden files hold."""
    try:
        obj = analyse_message(raw).to_json(name)
    except ParseError as exc:
        obj = {"file": name, "kind": None, "error": str(exc), "mta": None, "results": []}
    loaded: dict[str, Any] = json.loads(json.dumps(obj, sort_keys=True))
    return loaded


def compare(
    name: str, expected: Mapping[str, Any], actual: Mapping[str, Any]
) -> list[GoldenDifference]:
    """The differences between a golden object and a fresh analysis (empty when equal)."""
    diffs: list[GoldenDifference] = []
    for key in _TOP_KEYS:
        if expected.get(key) != actual.get(key):
            diffs.append(GoldenDifference(name, key, expected.get(key), actual.get(key)))
    want = list(expected.get("results") or [])
    got = list(actual.get("results") or [])
    if len(want) != len(got):
        diffs.append(
            GoldenDifference(
                name,
                "recipients",
                [r.get("recipient") for r in want],
                [r.get("recipient") for r in got],
            )
        )
        return diffs
    for index, (old, new) in enumerate(zip(want, got, strict=True)):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                diffs.append(
                    GoldenDifference(name, f"results[{index}].{key}", old.get(key), new.get(key))
                )
    return diffs


def replay(samples: Path) -> list[GoldenDifference]:
    """Replay every sample under ``samples``; a missing or unreadable golden file is a difference."""
    diffs: list[GoldenDifference] = []
    for eml in sorted(samples.rglob("*.eml")):
        name = eml.relative_to(samples).as_posix()
        golden = expected_path(eml)
        try:
            expected = json.loads(golden.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            diffs.append(GoldenDifference(name, "expected file", golden.name, str(exc)))
            continue
        if not isinstance(expected, dict):
            diffs.append(GoldenDifference(name, "expected file", "an object", expected))
            continue
        diffs.extend(compare(name, expected, analyse_sample(eml.read_bytes(), name)))
    return diffs
