"""The command line on the embedded default (a fresh SQLite file per test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import app

runner = CliRunner()


@pytest.fixture
def db_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    db = tmp_path / "cli.db"
    monkeypatch.setenv("STOPLIST_DATABASE_URL", f"sqlite+aiosqlite:///{db}")
    monkeypatch.delenv("STOPLIST_REDIS_URL", raising=False)
    result = runner.invoke(app, ["migrate"])
    assert result.exit_code == 0, result.output
    return db


def run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_keys_create_list_revoke(db_env: Path) -> None:
    created = json.loads(run("keys", "create", "--name", "campaigns", "--scope", "check", "--json"))
    assert created["name"] == "campaigns"
    assert created["scope"] == "check"
    assert created["key"].startswith("sl_")
    listing = json.loads(run("keys", "list", "--json"))
    assert [k["name"] for k in listing] == ["campaigns"]
    assert created["key"] not in json.dumps(listing)
    run("keys", "revoke", "campaigns")
    assert json.loads(run("keys", "list", "--json"))[0]["revoked_at"] is not None
    bad = runner.invoke(app, ["keys", "create", "--name", "x", "--scope", "root"])
    assert bad.exit_code == 1
    assert "scope" in bad.output


def test_suppress_check_unsuppress(db_env: Path) -> None:
    run("suppress", "Someone@Example.com", "--reason", "user_unknown", "--outcome", "hard")
    (answer,) = [json.loads(x) for x in run("check", "someone@example.com", "--json").splitlines()]
    assert answer["suppressed"] is True
    assert answer["outcome"] == "hard"
    assert "not suppressed" in run("check", "other@example.com")
    out = run("unsuppress", "someone@example.com", "--reason", "verified by phone")
    assert "removed global hard/user_unknown" in out
    assert "not suppressed" in run("check", "someone@example.com")
    assert "0 active" in run("cache", "rebuild")


def test_invalid_configuration_fails_with_the_variable_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STOPLIST_DATABASE_URL", "mysql://nope")
    result = runner.invoke(app, ["check", "a@example.com"])
    assert result.exit_code == 2
    assert "STOPLIST_DATABASE_URL" in result.output


@pytest.mark.parametrize("command", ["serve", "smtp"])
def test_trace_logging_is_refused(command: str) -> None:
    """uvicorn's ``trace`` level logs every request's headers, the API key among them."""
    result = runner.invoke(app, [command, "--log-level", "trace"])
    assert result.exit_code == 2
    assert "trace" in result.output


@pytest.mark.parametrize("role", ["api", "intake", "worker"])
def test_a_split_role_is_refused_on_the_embedded_store(db_env: Path, role: str) -> None:
    """The SQLite file and its in-process cache belong to one process: only ``--role all``."""
    result = runner.invoke(app, ["serve", "--role", role, "--no-migrate"])
    assert result.exit_code == 2
    assert f"--role {role} needs PostgreSQL" in result.output


SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def test_explain_names_the_parser_the_lines_and_the_rule() -> None:
    sample = SAMPLES / "bounce" / "postfix-01.eml"
    text = run("explain", str(sample))
    assert "parser: rfc3464" in text
    assert "recipient carol@example.net" in text
    assert "rule: text-user-unknown (50-text.toml) -> hard / user_unknown" in text

    data = json.loads(run("explain", str(sample), "--json"))
    assert data["mta"] == "rfc3464"
    (recipient,) = data["recipients"]
    assert recipient["decision"] == {
        "outcome": "hard",
        "reason": "user_unknown",
        "rule_id": "text-user-unknown",
    }
    assert any("Final-Recipient" in line["text"] for line in recipient["lines"])
    assert recipient["rule"]["source"].startswith("RFC 3463")


def test_explain_an_unreadable_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["explain", str(tmp_path / "missing.eml")])
    assert result.exit_code == 2
    assert "cannot read" in result.output


def test_command_names_say_what_they_do_and_old_names_still_work() -> None:
    runner = CliRunner()
    for group, new, old in (("keys", "generate", "new"), ("token", "generate-key", "new-key")):
        help_text = runner.invoke(app, [group, "--help"]).output
        assert new in help_text and f" {old} " not in help_text  # the old name is hidden
        fresh = runner.invoke(app, [group, new])
        again = runner.invoke(app, [group, old])
        assert fresh.exit_code == again.exit_code == 0, (fresh.output, again.output)
        assert fresh.output.strip() and again.output.strip()
    assert "The key's name" in runner.invoke(app, ["keys", "revoke", "--help"]).output
