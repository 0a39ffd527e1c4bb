"""``stoplist import`` and ``export``: whole lists as CSV."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli.common import (
    CLI_ACTOR,
    JsonOpt,
    dump,
    err,
    fast_event_loop,
    out,
    run,
)
from app.container import Services


def import_cmd(
    file: Annotated[Path, typer.Argument(help="CSV file (.gz or gzip content is inflated)")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and count only")] = False,
    atomic: Annotated[
        bool, typer.Option("--atomic", help="Any invalid row: write nothing")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace entries even when that weakens them")
    ] = False,
    stream: Annotated[str | None, typer.Option(help="Stream for rows without one")] = None,
    reason: Annotated[str | None, typer.Option(help="Reason for rows without one")] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="auto, stoplist, ses, sendgrid-bounces, postmark, …")
    ] = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Import suppressions from a CSV export (ours, SES, SendGrid, Postmark, Mailgun).

    Never weakens an existing entry unless --overwrite; the same file twice changes nothing.
    Exits 1 when any row was invalid."""
    from app import bulk

    if not file.is_file():
        err.print(f"[red]no such file:[/red] {file}")
        raise typer.Exit(2)
    size = file.stat().st_size
    progress = _import_progress()
    task = progress.add_task("import", total=size, rows=0, rate=0)
    started = time.perf_counter()
    read = [0]

    def on_read(done: int) -> None:
        read[0] = done

    def on_progress(summary: bulk.ImportSummary) -> None:
        elapsed = max(time.perf_counter() - started, 1e-6)
        progress.update(
            task, completed=read[0], rows=summary.rows, rate=int(summary.rows / elapsed)
        )

    async def go(s: Services) -> bulk.ImportSummary:
        options = bulk.ImportOptions(
            dry_run=dry_run,
            atomic=atomic,
            overwrite=overwrite,
            stream=stream,
            reason=reason,
            format=fmt,
            soft_days=s.settings.soft_suppression_days,
        )
        chunks = bulk.gunzip_if_needed(
            bulk.file_chunks(str(file), on_read=on_read), force=file.suffix == ".gz"
        )
        return await bulk.import_csv(
            s.suppressions, chunks, options, actor=CLI_ACTOR, progress=on_progress
        )

    with fast_event_loop(), progress:
        summary = run(go)
        progress.update(task, completed=size)
    if as_json:
        dump(summary.as_dict())
    else:
        _print_import_summary(summary, dry_run=dry_run)
    if summary.invalid:
        raise typer.Exit(1)


def _import_progress() -> Any:
    """A progress bar on standard error (off when it is not a terminal)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("importing"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[rows]:>12,} rows  {task.fields[rate]:>9,} rows/s"),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
    )


def _print_import_summary(summary: Any, *, dry_run: bool) -> None:
    state = (
        "dry run, nothing written"
        if dry_run
        else ("committed" if summary.committed else "[red]nothing written[/red]")
    )
    out.print(
        f"{summary.rows:,} rows ({summary.format}): {summary.inserted:,} inserted, "
        f"{summary.updated:,} updated, {summary.unchanged:,} unchanged, "
        f"{summary.skipped:,} skipped (expired), {summary.invalid:,} invalid; "
        f"{state} in {summary.duration_s:.1f}s"
    )
    for e in summary.errors[:20]:
        out.print(f"  line {e['line']}: {e['reason']} ({e['value']!r})")
    if summary.invalid > 20:
        out.print(f"  … and {summary.invalid - 20:,} more")


def export_cmd(
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="Write here (.gz: gzip); '-' or omitted: standard output"),
    ] = None,
    outcome: Annotated[str | None, typer.Option(help="Only this outcome")] = None,
    reason: Annotated[str | None, typer.Option(help="Only this reason")] = None,
    stream: Annotated[str | None, typer.Option(help="Only this scope (a stream or global)")] = None,
    domain: Annotated[str | None, typer.Option(help="Only this recipient domain")] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Only entries last seen at or after (UTC)")
    ] = None,
    hashed: Annotated[
        bool, typer.Option("--hashed", help="SHA-256 of each normalised address instead")
    ] = False,
) -> None:
    """Export active suppressions as CSV (the format `stoplist import` reads)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from app import bulk

    if out_file is not None and str(out_file) == "-":  # the usual convention: - is stdout
        out_file = None
    progress = Progress(
        SpinnerColumn(),
        TextColumn("exporting {task.fields[rows]:>12,} rows  {task.fields[mb]:>8.1f} MB"),
        console=err,
        disable=not err.is_terminal or out_file is None,
    )
    task = progress.add_task("export", rows=0, mb=0.0)

    async def go(s: Services) -> bulk.ExportStats:
        flt = bulk.ExportFilter(
            outcome=outcome,
            reason=reason,
            stream=stream,
            domain=domain,
            since=since.replace(tzinfo=UTC) if since and since.tzinfo is None else since,
            hashed=hashed,
        )
        stats = bulk.ExportStats()
        target = _export_target(out_file)
        lines = 0
        try:
            async for data in bulk.export_csv(s.suppressions, flt, stats):
                target.write(data)
                lines += data.count(b"\n")
                progress.update(task, rows=max(lines - 1, 0), mb=stats.bytes / 1e6)
        finally:
            if out_file is not None:
                target.close()
            else:
                target.flush()
        stats.rows = stats.rows or max(lines - 1, 0)
        return stats

    with progress:
        stats = run(go)
    if out_file is not None:
        err.print(f"exported {stats.rows:,} rows ({stats.bytes / 1e6:.1f} MB) to {out_file}")


# ------------------------------------------------------------------------------------- parsing


def _export_target(out_file: Path | None) -> Any:
    """Where the export goes: standard output, a gzip file (``.gz``) or a plain file."""
    import gzip

    if out_file is None:
        return sys.stdout.buffer
    if out_file.suffix == ".gz":
        return gzip.open(out_file, "wb")
    return out_file.open("wb")
