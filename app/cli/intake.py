"""Stored inbound mail: ``reprocess`` and ``purge``; ``parse`` and ``explain`` read message files."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli.common import (
    JsonOpt,
    dump,
    err,
    out,
    run,
)
from app.container import Services


def reprocess(
    failed: Annotated[bool, typer.Option("--failed", help="Only messages that failed")] = False,
    since: Annotated[
        datetime | None, typer.Option(help="Only messages received since (ISO 8601, UTC)")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report, write nothing")] = False,
    limit: Annotated[int | None, typer.Option(help="At most this many messages")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run stored messages through parsing and policy again (e.g. after a rule change) and
    report what changes."""
    from app.intake import IntakeStore, policy_applier
    from app.intake import reprocess as run_reprocess
    from app.intake.parse_pool import ParsingPool

    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)

    async def go(s: Services) -> Any:
        cfg = s.settings
        pool = ParsingPool(
            workers=cfg.parse_workers,
            timeout_s=cfg.parse_timeout_s,
            memory_mb=cfg.parse_memory_mb,
            inline_max_bytes=cfg.parse_inline_max_bytes,
        )
        try:
            return await run_reprocess(
                IntakeStore(s.db),
                pool,
                policy_applier(s),
                failed_only=failed,
                since=since,
                dry_run=dry_run,
                limit=limit,
            )
        finally:
            await asyncio.to_thread(pool.close)

    report = run(go)
    if as_json:
        dump(report.as_dict())
        return
    verb = "would change" if dry_run else "changed"
    out.print(f"examined {report.examined} messages; {verb} {len(report.changes)}")
    for c in report.changes:
        line = f"  #{c.id}: {c.old_state}/{c.old_kind} -> {c.new_state}/{c.new_kind}"
        out.print(line + (f" ({c.error})" if c.error else ""))
        for ch in c.changes:
            out.print(
                f"      {ch['recipient']}: {_decision(ch['before'])} -> {_decision(ch['after'])}"
            )


def _decision(d: dict[str, Any] | None) -> str:
    return "-" if d is None else f"{d['outcome']}/{d['reason']}"


def purge(
    days: Annotated[float | None, typer.Option(help="Default STOPLIST_RAW_RETENTION_DAYS")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Drop the raw bytes of processed messages older than the retention (rows and state stay)."""
    from app.intake import IntakeStore

    async def go(s: Services) -> tuple[float, int]:
        keep = s.settings.raw_retention_days if days is None else days
        if keep <= 0:
            return keep, 0
        return keep, await IntakeStore(s.db).purge_raw(keep)

    keep, n = run(go)
    if as_json:
        dump({"days": keep, "purged": n})
    elif keep <= 0:
        out.print("retention is 0 (keep raw messages forever): nothing purged")
    else:
        out.print(f"dropped the raw bytes of {n} messages older than {keep:g} days")


# ------------------------------------------------------------------------------------- keys


def parse(
    paths: Annotated[list[Path], typer.Argument(help="Files, or folders searched for *.eml")],
    jsonl: Annotated[bool, typer.Option("--jsonl", help="One JSON object per message")] = False,
) -> None:
    """Parse bounce and complaint messages and print what Stoplist makes of them."""
    from dsn import DEFAULT_OPTIONS
    from dsn.jsonl import analyse_file, iter_message_files

    for path in iter_message_files(paths):
        obj = analyse_file(path, DEFAULT_OPTIONS)
        if jsonl:
            sys.stdout.write(json.dumps(obj, sort_keys=True, ensure_ascii=False) + "\n")
        else:
            out.print(
                f"[bold]{obj['file']}[/bold]: {obj['kind']}"
                + (f" ({obj['error']})" if obj.get("error") else "")
            )
            for r in obj.get("results", []):
                out.print(
                    f"  {r.get('recipient')}: {r.get('outcome')}/{r.get('reason')} "
                    f"status={r.get('status')} rule={r.get('rule_id')}"
                )


def explain(
    path: Annotated[Path, typer.Argument(help="One bounce or complaint message (.eml)")],
    as_json: JsonOpt = False,
) -> None:
    """Show why Stoplist decided what it did about one message: the parser that claimed it, the
    lines that named each recipient, the signals read and the rule that decided, with its source."""
    from dsn.explain import explain_message

    try:
        raw = path.read_bytes()
    except OSError as exc:
        err.print(f"[red]cannot read {path}: {exc.strerror}[/red]")
        raise typer.Exit(2) from exc
    explanation = explain_message(raw)
    if as_json:
        dump(explanation.to_json())
    else:
        sys.stdout.write(explanation.to_text() + "\n")
