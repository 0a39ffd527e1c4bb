"""Golden samples: ``samples/events/<source>-NN.<ext>`` against the ``.expected.json`` beside it.

The file name says which parser reads it: ``.csv``/``.log``/``.jsonl`` are logs (``LOG_PARSERS``),
``.json`` a webhook request body (``WEBHOOK_PARSERS``). Set ``STOPLIST_UPDATE_GOLDEN=1`` to rewrite
the expected files instead (then read the diff).
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from events import LOG_PARSERS, WEBHOOK_PARSERS, Batch, Event, EventKind, parse_postfix

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "events"
FILES = sorted(p for p in SAMPLES.iterdir() if not p.name.endswith(".expected.json"))


def _actual(path: Path) -> dict[str, Any]:
    source = path.name.split("-")[0]
    if path.suffix == ".json":
        batch = WEBHOOK_PARSERS[source](path.read_bytes(), path.name)
    else:
        parser = LOG_PARSERS[source]
        if source == "postfix":
            parser = partial(parse_postfix, year=2026)  # classic syslog stamps have no year
        batch = Batch()
        batch.add(parser(path.read_text().splitlines(), path.name))
    return json.loads(json.dumps(batch.to_json(), sort_keys=True))


def _expected_path(path: Path) -> Path:
    return path.with_name(path.stem + ".expected.json")


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_golden(path: Path) -> None:
    actual = _actual(path)
    expected_path = _expected_path(path)
    if os.environ.get("STOPLIST_UPDATE_GOLDEN") == "1":
        expected_path.write_text(json.dumps(actual, sort_keys=True, indent=2) + "\n")
        return
    assert expected_path.exists(), f"no {expected_path.name}: run with STOPLIST_UPDATE_GOLDEN=1"
    assert actual == json.loads(expected_path.read_text())


def test_every_source_has_samples() -> None:
    sources = {f.name.split("-")[0] for f in FILES}
    assert sources >= set(LOG_PARSERS) | set(WEBHOOK_PARSERS)


def test_every_source_reports_a_hard_bounce() -> None:
    """The end-to-end promise: a hard bounce from each source reads as hard here."""
    hard: set[str] = set()
    for path in FILES:
        for event in _actual(path)["events"]:
            if event["kind"] == EventKind.BOUNCE and event["outcome"] == "hard":
                hard.add(event["source"])
    assert hard == {"pmta", "kumomta", "postfix", "ses", "sendgrid", "postmark", "mailgun"}


def test_event_json_has_every_field() -> None:
    assert set(Event.__slots__) <= {
        k for path in FILES[:1] for e in _actual(path)["events"] for k in e
    }


@pytest.mark.parametrize("path", [f for f in FILES if f.suffix != ".json"], ids=lambda f: f.name)
def test_log_lines_read_the_same_with_crlf(path: Path) -> None:
    """PowerMTA ends records with CRLF (RFC 4180); logs copied from Windows hosts do too."""
    source = path.name.split("-")[0]
    parser = LOG_PARSERS[source]
    if source == "postfix":
        parser = partial(parse_postfix, year=2026)
    text = path.read_text()
    lf, crlf = Batch(), Batch()
    lf.add(parser(text.splitlines(keepends=True), path.name))
    crlf.add(parser(text.replace("\n", "\r\n").splitlines(keepends=True), path.name))
    assert crlf.to_json() == lf.to_json()
