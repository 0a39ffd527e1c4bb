"""``explain_message``: the parser, the lines, the signals and the rule behind each result."""

from __future__ import annotations

from pathlib import Path

from dsn.explain import explain_message, rule_details

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _explain(name: str) -> dict[str, object]:
    return explain_message((SAMPLES / name).read_bytes()).to_json()


def test_bounce_names_parser_lines_signals_and_rule() -> None:
    got = _explain("bounce/exim-01.eml")
    assert got["kind"] == "bounce"
    assert got["mta"] == "exim"
    declined = got["parsers_declined"]
    assert isinstance(declined, list)
    # Only vendor parsers that read the status part with rfc3464's reader come before it.
    assert "rfc3464" in declined
    assert set(declined[: declined.index("rfc3464")]) <= {
        "powermta",
        "mcafee",
        "barracuda",
        "amavis",
        "opensmtpd",
    }
    assert "exim" not in got["parsers_declined"]  # type: ignore[operator]
    (rcpt,) = got["recipients"]  # type: ignore[misc]
    assert rcpt["recipient"] == "dave@example.org"
    assert any("550 5.1.1 <dave@example.org>" in line["text"] for line in rcpt["lines"])
    assert rcpt["signals"]["status"] == "5.1.1"
    assert rcpt["decision"] == {
        "outcome": "hard",
        "reason": "user_unknown",
        "rule_id": rcpt["rule"]["id"],
    }
    rule = rcpt["rule"]
    assert rule["file"].endswith(".toml")
    assert rule["source"]
    assert rule["examples"]
    assert rule["matched_text"], "the pattern that matched the diagnostic is named"


def test_complaint_is_explained_by_the_feedback_type() -> None:
    got = _explain("arf/aol-01.eml")
    assert got["kind"] == "complaint"
    assert got["parsers_declined"] == []
    (rcpt,) = got["recipients"]  # type: ignore[misc]
    assert "feedback" in rcpt["rule"]["note"]


def test_auto_reply_has_nothing_to_explain_per_recipient() -> None:
    got = _explain("negative/vacation-01.eml")
    assert got["kind"] == "auto_reply"
    assert got["recipients"] == []
    text = explain_message((SAMPLES / "negative/vacation-01.eml").read_bytes()).to_text()
    assert text.startswith("kind: auto_reply")


def test_text_rendering_names_the_rule_and_its_source() -> None:
    text = explain_message((SAMPLES / "bounce/exim-01.eml").read_bytes()).to_text()
    assert "parser: exim" in text
    assert "rule: " in text and "source: " in text and "example: " in text


def test_rule_details_for_ids_outside_the_rule_set() -> None:
    assert rule_details(None) is None
    assert "no rule matched" in rule_details("unclassified")["note"]  # type: ignore[index]
    assert "not a rule" in rule_details("gone-rule")["note"]  # type: ignore[index]
