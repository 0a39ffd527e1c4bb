"""``stoplist classify`` (one SMTP reply) and ``rules check`` (the rule files)."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.common import (
    JsonOpt,
    dump,
    err,
    out,
)

rules_app = typer.Typer(help="Classification rules.", no_args_is_help=True)


def classify(
    text: Annotated[str, typer.Argument(help='An SMTP reply, e.g. "550 5.1.1 user unknown"')],
    provider: Annotated[str | None, typer.Option(help="gmail, microsoft, yahoo, …")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Classify one SMTP reply line."""
    from classifiers import classify as run_classify

    c = run_classify(diagnostic=text, provider=provider)
    if as_json:
        dump({"outcome": str(c.outcome), "reason": str(c.reason), "rule_id": c.rule_id})
    else:
        out.print(f"{c.outcome} / {c.reason}  (rule {c.rule_id})")


@rules_app.command("check")
def rules_check() -> None:
    """Validate the rule files: ids, examples, sources, shadowing, reachability."""
    from classifiers import check_rules, default_rules

    problems = check_rules(default_rules())
    for p in problems:
        err.print(f"[red]✗[/red] {p}")
    if problems:
        raise typer.Exit(1)
    out.print(f"rules OK ({len(default_rules().rules)} rules)")


# ------------------------------------------------------------------------------- signed tokens
