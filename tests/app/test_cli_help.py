"""Every page of the command tree's ``--help`` says what each argument and option is, in words:
no bare type placeholders such as ``<bool>``, nothing without a help text."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer
from typer.testing import CliRunner

from app.cli import app

runner = CliRunner()


def _tree(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _tree(sub, [*path, name])


COMMANDS = list(_tree(typer.main.get_command(app), []))


def test_the_tree_is_walked() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"check", "rules validate", "keys revoke", "token verify", "export"} <= names


def test_no_help_page_shows_a_type_placeholder_for_a_flag() -> None:
    pages = {
        " ".join(path): runner.invoke(app, [*path, "--help"], terminal_width=200).output
        for path, _ in COMMANDS
    }
    assert [p for p, text in pages.items() if "Usage:" not in text] == []
    assert [p for p, text in pages.items() if "<bool>" in text] == []


def test_every_command_argument_and_option_has_help() -> None:
    missing = [
        f"{' '.join(path) or 'stoplist'}: {param.name}"
        for path, command in COMMANDS
        for param in command.params
        if param.name != "help" and not (getattr(param, "help", None) or "").strip()
    ]
    missing += [
        " ".join(path) for path, command in COMMANDS if path and not (command.help or "").strip()
    ]
    assert missing == []


def test_rules_are_validated_by_an_unambiguous_name_and_the_old_one_still_works() -> None:
    top = runner.invoke(app, ["rules", "--help"]).output
    assert "validate" in top and " check " not in top  # the old name is hidden
    for words in (["rules", "validate"], ["rules", "check"]):
        result = runner.invoke(app, [*words, "--no-replay"])
        assert result.exit_code == 0, result.output
        assert "rules OK" in result.output
