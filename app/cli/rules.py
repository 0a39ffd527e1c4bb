"""``stoplist classify`` (one SMTP reply) and ``rules validate`` (the rule files)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import (
    JsonOpt,
    dump,
    err,
    out,
)

rules_app = typer.Typer(help="Classification rules.", no_args_is_help=True, rich_markup_mode=None)


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


_SAMPLES_DIR = Path(__file__).resolve().parents[2] / "samples"


@rules_app.command("validate")
@rules_app.command("check", hidden=True)  # its former name, beside the address `check`
def rules_validate(
    samples: Annotated[
        Path | None,
        typer.Option(help="Golden samples to replay (default: the project's samples/)."),
    ] = None,
    replay: Annotated[
        bool, typer.Option("--replay/--no-replay", help="Replay the golden samples.")
    ] = True,
) -> None:
    """Validate the rule files (ids, examples, sources, shadowing, reachability) and replay the
    golden samples: any changed golden outcome fails."""
    from classifiers import check_rules, default_rules
    from dsn.golden import replay as replay_samples

    problems = check_rules(default_rules())
    folder = samples if samples is not None else _SAMPLES_DIR
    replayed = 0
    if replay and (samples is not None or folder.is_dir()):
        if not folder.is_dir():
            err.print(f"[red]no samples folder {folder}")
            raise typer.Exit(2)
        problems += [f"golden {d}" for d in replay_samples(folder)]
        replayed = sum(1 for _ in folder.rglob("*.eml"))
    for p in problems:
        err.print(f"[red]✗[/red] {p}")
    if problems:
        raise typer.Exit(1)
    golden = f", {replayed} golden samples unchanged" if replayed else ""
    out.print(f"rules OK ({len(default_rules().rules)} rules{golden})")


# ------------------------------------------------------------------------------- signed tokens
