"""Golden samples: every ``samples/**/*.eml`` against the ``.expected.json`` beside it.

Set ``STOPLIST_UPDATE_GOLDEN=1`` to rewrite the expected files instead (then read the diff).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dsn import analyse_message

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
FILES = sorted(SAMPLES.rglob("*.eml"))


def _expected_path(eml: Path) -> Path:
    return eml.with_name(eml.name[: -len(".eml")] + ".expected.json")


def _actual(eml: Path) -> dict[str, object]:
    obj = analyse_message(eml.read_bytes()).to_json(eml.relative_to(SAMPLES).as_posix())
    return json.loads(json.dumps(obj, sort_keys=True))


@pytest.mark.parametrize("eml", FILES, ids=[f.relative_to(SAMPLES).as_posix() for f in FILES])
def test_sample(eml: Path) -> None:
    actual = _actual(eml)
    expected_path = _expected_path(eml)
    if os.environ.get("STOPLIST_UPDATE_GOLDEN") == "1":
        expected_path.write_text(json.dumps(actual, sort_keys=True, indent=2) + "\n")
        return
    assert expected_path.exists(), f"no {expected_path.name}: run with STOPLIST_UPDATE_GOLDEN=1"
    expected = json.loads(expected_path.read_text())
    expected.pop("file", None)
    actual.pop("file", None)
    assert actual == expected


def test_there_are_samples() -> None:
    assert len(FILES) >= 10


def test_every_parser_has_a_golden_sample() -> None:
    """Each parser module claims at least one sample (a parser nobody sees work is untested)."""
    from dsn.mta import PARSERS

    claimed = {json.loads(_expected_path(f).read_text()).get("mta") for f in FILES}
    missing = [name for name, _parser in PARSERS if name not in claimed]
    assert not missing, f"parsers with no golden sample: {missing}"
