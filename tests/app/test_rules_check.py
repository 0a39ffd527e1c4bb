"""``stoplist rules validate``: rule validation plus the golden replay of ``samples/``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from app.cli import app
from dsn.golden import compare, expected_path, replay

runner = CliRunner()
SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SAMPLE = SAMPLES / "bounce" / "postfix-01.eml"


def _copy_sample(tmp_path: Path) -> Path:
    folder = tmp_path / "samples" / "bounce"
    folder.mkdir(parents=True)
    shutil.copy(SAMPLE, folder / SAMPLE.name)
    shutil.copy(expected_path(SAMPLE), folder / expected_path(SAMPLE).name)
    return folder / SAMPLE.name


def test_the_shipped_samples_replay_unchanged() -> None:
    assert replay(SAMPLES) == []
    result = runner.invoke(app, ["rules", "validate"])
    assert result.exit_code == 0, result.output
    assert "golden samples unchanged" in result.output


def test_a_changed_golden_outcome_fails_the_check(tmp_path: Path) -> None:
    eml = _copy_sample(tmp_path)
    golden = expected_path(eml)
    data = json.loads(golden.read_text())
    data["results"][0]["outcome"] = "soft"
    golden.write_text(json.dumps(data, sort_keys=True, indent=2) + "\n")

    (diff,) = replay(tmp_path / "samples")
    assert (diff.sample, diff.what, diff.expected, diff.actual) == (
        "bounce/postfix-01.eml",
        "results[0].outcome",
        "soft",
        "hard",
    )
    result = runner.invoke(app, ["rules", "validate", "--samples", str(tmp_path / "samples")])
    assert result.exit_code == 1
    assert "results[0].outcome" in result.output
    skipped = runner.invoke(
        app, ["rules", "validate", "--samples", str(tmp_path / "samples"), "--no-replay"]
    )
    assert skipped.exit_code == 0, skipped.output


def test_a_missing_golden_file_is_a_difference(tmp_path: Path) -> None:
    eml = _copy_sample(tmp_path)
    expected_path(eml).unlink()
    (diff,) = replay(tmp_path / "samples")
    assert diff.what == "expected file"


def test_compare_reports_a_changed_recipient_list() -> None:
    old = {"kind": "bounce", "mta": "x", "results": [{"recipient": "a@example.com"}]}
    new = {"kind": "bounce", "mta": "y", "results": []}
    diffs = compare("s.eml", old, new)
    assert [d.what for d in diffs] == ["mta", "recipients"]
