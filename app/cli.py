"""The ``stoplist`` command line: serve, migrate, keys, check, suppress, unsuppress, import, export,
cache, parse.

Commands that touch the suppression list work on the configured database and cache directly (the
same environment variables as the service), so run them where the service's configuration is.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from app.container import Services
from app.errors import AppError
from app.settings import Settings, SettingsError, load_settings

T = TypeVar("T")

app = typer.Typer(
    name="stoplist",
    help="Bounce, feedback-loop and suppression service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
cache_app = typer.Typer(help="The suppression cache.", no_args_is_help=True)
rules_app = typer.Typer(help="Classification rules.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(cache_app, name="cache")
app.add_typer(rules_app, name="rules")
token_app = typer.Typer(
    help="Signed return paths, references and unsubscribe links.", no_args_is_help=True
)
app.add_typer(token_app, name="token")

out = Console()
err = Console(stderr=True)
CLI_ACTOR = "cli"

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@asynccontextmanager
async def _services(settings: Settings) -> AsyncIterator[Services]:
    from app.container import build_services

    services = build_services(settings, auto_rebuild=False)
    try:
        yield services
    finally:
        await services.keys.close()
        await services.cache.close()
        await services.db.dispose()


def _run(fn: Callable[[Services], Awaitable[T]]) -> T:
    settings = _settings()

    async def go() -> T:
        async with _services(settings) as services:
            return await fn(services)

    try:
        return asyncio.run(go())
    except AppError as exc:
        err.print(f"[red]error ({exc.error}):[/red] {exc.detail}")
        raise typer.Exit(1) from None


def _dump(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=_json_default, sort_keys=True) + "\n")


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(type(value).__name__)


# ------------------------------------------------------------------------------------- service


class LogLevel(StrEnum):
    """Log levels the service accepts. Not uvicorn's ``trace``: it logs every request's ASGI
    scope, ``Authorization`` header (the API key) included."""

    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    DEBUG = "debug"


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default STOPLIST_HTTP_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default STOPLIST_HTTP_PORT")] = None,
    migrate: Annotated[bool, typer.Option(help="Apply migrations first")] = True,
    log_level: Annotated[LogLevel, typer.Option(case_sensitive=False)] = LogLevel.INFO,
) -> None:
    """Run the HTTP API (and, when configured, the SMTP sink) in one process."""
    import logging

    import uvicorn

    from app.db import run_migrations
    from app.main import create_app

    settings = _settings()
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if migrate:
        run_migrations(settings)
    uvicorn.run(
        create_app(settings),
        host=host or settings.http_host,
        port=port or settings.http_port,
        log_level=log_level.value,
        access_log=False,
        proxy_headers=True,
    )


@app.command("migrate")
def migrate_cmd() -> None:
    """Apply database migrations (alembic upgrade head)."""
    from app.db import run_migrations

    settings = _settings()
    run_migrations(settings)
    out.print("database is at the latest schema")


@app.command()
def smtp(
    log_level: Annotated[LogLevel, typer.Option(case_sensitive=False)] = LogLevel.INFO,
    migrate: Annotated[bool, typer.Option(help="Apply migrations first")] = True,
) -> None:
    """Run the SMTP sink and the intake processing alone (no HTTP API)."""
    import logging
    import signal

    from app.db import run_migrations
    from app.smtp import start_sink

    settings = _settings()
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if migrate:
        run_migrations(settings)

    async def go(s: Services) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        sink = await start_sink(s)
        try:
            await stop.wait()
        finally:
            await sink.close()

    _run(go)


@app.command()
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
    from app.parsing_pool import ParsingPool

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

    report = _run(go)
    if as_json:
        _dump(report.as_dict())
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


@app.command()
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

    keep, n = _run(go)
    if as_json:
        _dump({"days": keep, "purged": n})
    elif keep <= 0:
        out.print("retention is 0 (keep raw messages forever): nothing purged")
    else:
        out.print(f"dropped the raw bytes of {n} messages older than {keep:g} days")


# ------------------------------------------------------------------------------------- keys


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A name for the key's holder")],
    scope: Annotated[str, typer.Option(help="check | read | write | admin")],
    as_json: JsonOpt = False,
) -> None:
    """Create a key and print it once (only its hash is stored)."""

    async def go(s: Services) -> tuple[Any, str]:
        return await s.keys.create(name, scope, actor=CLI_ACTOR)

    info, key = _run(go)
    if as_json:
        _dump({"name": info.name, "scope": info.scope, "key": key})
    else:
        out.print(f"created key [bold]{info.name}[/bold] (scope {info.scope}); it is shown once:")
        print(key)


@keys_app.command("list")
def keys_list(as_json: JsonOpt = False) -> None:
    """List keys (names, scopes, prefixes; never the keys)."""

    async def go(s: Services) -> list[dict[str, Any]]:
        return await s.keys.list()

    rows = _run(go)
    if as_json:
        _dump(rows)
        return
    table = Table("name", "scope", "prefix", "created", "last used", "revoked")
    for r in rows:
        table.add_row(
            r["name"],
            r["scope"],
            r["prefix"] + "…",
            _short(r["created_at"]),
            _short(r["last_used_at"]),
            _short(r["revoked_at"]),
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(name: str) -> None:
    """Revoke a key (effective on every replica within STOPLIST_AUTH_CACHE_TTL_S)."""

    async def go(s: Services) -> None:
        await s.keys.revoke(name, actor=CLI_ACTOR)

    _run(go)
    out.print(f"revoked {name}")


@keys_app.command("new")
def keys_new() -> None:
    """Print a fresh random key, e.g. for STOPLIST_BOOTSTRAP_ADMIN_KEY (stores nothing)."""
    from app.auth import generate_key

    print(generate_key())


def _short(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


# ------------------------------------------------------------------------------------- list


@app.command()
def check(
    addresses: Annotated[list[str], typer.Argument(help="Addresses to check")],
    stream: Annotated[str | None, typer.Option(help="Sending stream")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Is each address suppressed (for this stream)?"""

    async def go(s: Services) -> list[dict[str, Any]]:
        return await s.suppressions.check_many(addresses, stream)

    results = _run(go)
    if as_json:
        for r in results:
            _dump(r)
        return
    for r in results:
        if r.get("error"):
            out.print(f"{r['address']}: [yellow]invalid[/yellow] ({r['error']})")
        elif r["suppressed"]:
            until = f", until {r['expires_at']}" if r.get("expires_at") else ", permanent"
            out.print(
                f"{r['address']}: [red]suppressed[/red] {r['outcome']}/{r['reason']} "
                f"({r['scope']}, since {r['since']}{until})"
            )
        else:
            out.print(f"{r['address']}: [green]not suppressed[/green]")


@app.command()
def suppress(
    address: str,
    reason: Annotated[str, typer.Option(help="snake_case reason")] = "manual",
    outcome: Annotated[str, typer.Option(help="manual|hard|soft|complaint|unsubscribe")] = "manual",
    stream: Annotated[str | None, typer.Option(help="Only this stream (default global)")] = None,
    days: Annotated[float | None, typer.Option(help="Expire after this many days")] = None,
    note: Annotated[str | None, typer.Option(help="Free text kept in the audit log")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Suppress an address by hand (never weakens an existing entry)."""
    from app.suppressions import SuppressRequest, row_to_dict

    expires = datetime.now(UTC) + timedelta(days=days) if days else None

    async def go(s: Services) -> dict[str, Any]:
        result = await s.suppressions.suppress(
            SuppressRequest(
                address=address,
                outcome=outcome,
                reason=reason,
                source="cli",
                stream=stream,
                expires_at=expires,
                actor=CLI_ACTOR,
                note=note,
                event_kind="manual_suppress",
            )
        )
        return {"created": result.created, "changed": result.changed, **row_to_dict(result.row)}

    row = _run(go)
    if as_json:
        _dump(row)
    else:
        verb = "suppressed" if row["changed"] else "already suppressed (kept)"
        out.print(f"{row['address']}: {verb} {row['outcome']}/{row['reason']} ({row['scope']})")


@app.command()
def unsuppress(
    address: str,
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log)")],
    stream: Annotated[str | None, typer.Option(help="Only this scope; default all")] = None,
    force: Annotated[bool, typer.Option(help="Also remove complaint suppressions")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove an address's suppressions, with a reason (the CLI acts as admin)."""

    async def go(s: Services) -> list[dict[str, Any]]:
        return await s.suppressions.unsuppress(
            address,
            stream=stream,
            all_scopes=stream is None,
            reason=reason,
            actor=CLI_ACTOR,
            may_remove_complaints=force,
        )

    removed = _run(go)
    if as_json:
        _dump({"address": address, "removed": removed})
    else:
        for r in removed:
            out.print(f"removed {r['scope']} {r['outcome']}/{r['reason']}")


@cache_app.command("rebuild")
def cache_rebuild() -> None:
    """Reload the cache from the database and mark it ready (safe while serving)."""

    async def go(s: Services) -> int:
        return await s.suppressions.rebuild_cache(force=True)

    n = _run(go)
    out.print(f"cache rebuilt: {n} active suppressions")


# ------------------------------------------------------------------------------------- bulk


@app.command("import")
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
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from app import bulk

    if not file.is_file():
        err.print(f"[red]no such file:[/red] {file}")
        raise typer.Exit(2)
    size = file.stat().st_size
    progress = Progress(
        TextColumn("importing"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[rows]:>12,} rows  {task.fields[rate]:>9,} rows/s"),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
    )
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

    with _fast_event_loop(), progress:
        summary = _run(go)
        progress.update(task, completed=size)
    result = summary.as_dict()
    if as_json:
        _dump(result)
    else:
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
    if summary.invalid:
        raise typer.Exit(1)


@contextmanager
def _fast_event_loop() -> Iterator[None]:
    """uvloop (what `serve` runs on) while a bulk command runs: ~25 % faster imports."""
    try:
        import uvloop
    except ImportError:
        yield
        return
    before = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(before)


@app.command("export")
def export_cmd(
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write here (.gz: gzip); default stdout")
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
    import gzip

    from rich.progress import Progress, SpinnerColumn, TextColumn

    from app import bulk

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
        target: Any
        if out_file is None:
            target = sys.stdout.buffer
        elif out_file.suffix == ".gz":
            target = gzip.open(out_file, "wb")  # noqa: SIM115 - closed below
        else:
            target = out_file.open("wb")
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
        stats = _run(go)
    if out_file is not None:
        err.print(f"exported {stats.rows:,} rows ({stats.bytes / 1e6:.1f} MB) to {out_file}")


# ------------------------------------------------------------------------------------- parsing


@app.command()
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


@app.command()
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
        _dump(explanation.to_json())
    else:
        sys.stdout.write(explanation.to_text() + "\n")


@app.command()
def classify(
    text: Annotated[str, typer.Argument(help='An SMTP reply, e.g. "550 5.1.1 user unknown"')],
    provider: Annotated[str | None, typer.Option(help="gmail, microsoft, yahoo, …")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Classify one SMTP reply line."""
    from classifiers import classify as run_classify

    c = run_classify(diagnostic=text, provider=provider)
    if as_json:
        _dump({"outcome": str(c.outcome), "reason": str(c.reason), "rule_id": c.rule_id})
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


def _signer() -> Any:
    from app.container import build_signer

    signer = build_signer(_settings())
    if signer is None:
        err.print("[red]no signing keys: set STOPLIST_SIGNING_KEYS (see `stoplist token new-key`)")
        raise typer.Exit(2)
    return signer


@token_app.command("mint")
def token_mint(
    recipient: Annotated[str, typer.Option(help="The recipient address")],
    stream: Annotated[str | None, typer.Option(help="The sending stream")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Return path, X-Stoplist-Ref and List-Unsubscribe values for one recipient."""
    try:
        values = _signer().headers(recipient, stream)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if as_json:
        _dump({"recipient": recipient, **values})
        return
    for name, value in values.items():
        out.print(f"{name}: {value}", soft_wrap=True, highlight=False)


@token_app.command("verify")
def token_verify(
    token: Annotated[str, typer.Argument(help="A token, a return path or an unsubscribe address")],
    as_json: JsonOpt = False,
) -> None:
    """Check a token or signed address against the configured keys, for every use."""
    from app.signing import TokenError

    signer = _signer()
    checks = [
        ("ref", signer.verify_ref_token),
        ("unsubscribe", signer.verify_unsubscribe_token),
        ("return_path", signer.verify_return_path),
        ("unsubscribe_address", signer.verify_unsubscribe_address),
    ]
    failures: dict[str, str] = {}
    for use, verify in checks:
        try:
            ref = verify(token)
        except TokenError as exc:
            failures[use] = str(exc.reason)
            continue
        answer = {
            "valid": True,
            "use": use,
            "recipient": ref.recipient,
            "stream": ref.stream,
            "issued_at": ref.issued_at,
            "key_id": ref.key_id,
        }
        if as_json:
            _dump(answer)
        else:
            out.print(
                f"valid {use}: {ref.recipient} stream={ref.stream or '-'} "
                f"issued {_short(ref.issued_at)} key {ref.key_id}",
                highlight=False,
            )
        return
    # The most telling reason: anything beats "malformed" (which every other use reports).
    reason = next((r for r in failures.values() if r != "malformed"), "malformed")
    if as_json:
        _dump({"valid": False, "reason": reason, "by_use": failures})
    else:
        err.print(f"[red]invalid:[/red] {reason}")
    raise typer.Exit(1)


@token_app.command("new-key")
def token_new_key(
    key_id: Annotated[str, typer.Option(help="Key id: 1-8 of a-z 0-9")] = "k1",
) -> None:
    """Print a new signing key entry for STOPLIST_SIGNING_KEYS (put it first to sign with it)."""
    from app.signing import KEY_ID_RE, new_key_secret

    if not KEY_ID_RE.match(key_id):
        err.print("[red]key id: 1-8 of a-z 0-9[/red]")
        raise typer.Exit(2)
    sys.stdout.write(f"{key_id}:{new_key_secret()}\n")


def main() -> None:
    app()
