"""``stoplist ingest pmta|postfix|kumomta PATH|-``: MTA logs into the event store.

A file is read from its start or where the last run stopped (offsets are kept in the database,
saved after each batch commits); ``--follow`` keeps reading as it grows and across rotation until
stopped (SIGTERM or Ctrl-C: the batch in flight is given up to 5 s to commit, and is counted in
the summary if it did; otherwise it is read again next time);
``-`` reads standard input (PowerMTA's ``<acct-file |program>`` pipe), which has no offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from concurrent.futures.process import BrokenProcessPool
from typing import Annotated

import typer

from app.cli.common import err, settings_or_exit
from app.container import build_services
from app.events import EventStore
from app.ingest import DEFAULT_BATCH_LINES, Progress, ingest_log

ingest_app = typer.Typer(
    help="Read MTA logs (PowerMTA accounting, Postfix mail log, KumoMTA JSON log).",
    no_args_is_help=True,
)

PathArg = Annotated[str, typer.Argument(help="Log file (plain or .gz), or - for standard input")]
FollowOpt = Annotated[
    bool, typer.Option("--follow", "-f", help="Keep reading as the file grows, across rotation")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress line or summary")]
BatchOpt = Annotated[int, typer.Option(min=1, max=100_000, help="Lines per transaction at most")]
ParseProcessOpt = Annotated[
    bool,
    typer.Option(
        "--parse-process/--no-parse-process",
        help="Parse in a second process while this one stores (a machine with a core to spare)",
    ),
]
FlushOpt = Annotated[
    int, typer.Option(min=10, max=60_000, help="Hand on lines that trickle in after this (ms)")
]


def pmta(
    path: PathArg,
    follow: FollowOpt = False,
    quiet: QuietOpt = False,
    batch_lines: BatchOpt = DEFAULT_BATCH_LINES,
    flush_ms: FlushOpt = 200,
    parse_process: ParseProcessOpt = False,
) -> None:
    """PowerMTA accounting CSV (any record-fields, header line first)."""
    _ingest("pmta", path, follow, quiet, batch_lines, flush_ms, parse_process=parse_process)


def postfix(
    path: PathArg,
    follow: FollowOpt = False,
    quiet: QuietOpt = False,
    batch_lines: BatchOpt = DEFAULT_BATCH_LINES,
    flush_ms: FlushOpt = 200,
    year: Annotated[
        int | None,
        typer.Option(help="Year of classic syslog stamps (default: the file's, or this year)"),
    ] = None,
) -> None:
    """Postfix mail log (status=sent|bounced|deferred lines, joined with the qmgr from= line)."""
    _ingest("postfix", path, follow, quiet, batch_lines, flush_ms, year)


def kumomta(
    path: PathArg,
    follow: FollowOpt = False,
    quiet: QuietOpt = False,
    batch_lines: BatchOpt = DEFAULT_BATCH_LINES,
    flush_ms: FlushOpt = 200,
) -> None:
    """KumoMTA JSON log records, one per line (decompress zstd-rotated logs first)."""
    _ingest("kumomta", path, follow, quiet, batch_lines, flush_ms)


ingest_app.command()(pmta)
ingest_app.command()(postfix)
ingest_app.command()(kumomta)


def _ingest(
    source: str,
    path: str,
    follow: bool,
    quiet: bool,
    batch_lines: int,
    flush_ms: int,
    year: int | None = None,
    *,
    parse_process: bool = False,
) -> None:
    if path != "-" and not _readable(path):
        err.print(f"[red]cannot read:[/red] {path}")
        raise typer.Exit(2)
    settings = settings_or_exit()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")

    async def go() -> None:
        # No ping per checkout: a batch that fails on a dead connection is retried (runner.py).
        services = build_services(settings, auto_rebuild=False, pre_ping=False)
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            await ingest_log(
                source,
                path,
                db=services.db,
                sink=EventStore(services, defer_refresh=True),
                follow=follow,
                batch_lines=batch_lines,
                flush_s=flush_ms / 1000,
                year=year,
                progress=Progress(quiet=quiet),
                count_deliveries=True,
                parse_process=parse_process,
            )
        finally:
            await services.keys.close()
            await services.cache.close()
            await services.db.dispose()

    # Stopped (SIGTERM, Ctrl-C): what committed has its offset saved; the rest is read next time.
    try:
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            asyncio.run(go())
    except BrokenProcessPool as exc:  # --parse-process: the child was killed (the OOM killer...)
        err.print(
            "[red]the parse process stopped[/red]; what was committed is kept with its offset: "
            "run the same command again to go on from there"
        )
        raise typer.Exit(1) from exc


def _readable(path: str) -> bool:
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False
