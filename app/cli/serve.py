"""``stoplist serve``, ``smtp`` and ``migrate``: run the service, or bring its database up to date."""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import Annotated, Any

import typer

from app.cli.common import (
    err,
    out,
    run,
    settings_or_exit,
)
from app.container import Services
from app.settings import Settings
from app.topology import Role, lower_priority


class LogLevel(StrEnum):
    """Log levels the service accepts. Not uvicorn's ``trace``: it logs every request's ASGI
    scope, ``Authorization`` header (the API key) included."""

    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    DEBUG = "debug"


LogLevelOpt = Annotated[
    LogLevel,
    typer.Option(case_sensitive=False, help="Lowest level logged (format: STOPLIST_LOG_FORMAT)"),
]


def serve(
    host: Annotated[str | None, typer.Option(help="Default STOPLIST_HTTP_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default STOPLIST_HTTP_PORT")] = None,
    migrate: Annotated[bool, typer.Option(help="Apply migrations first")] = True,
    log_level: LogLevelOpt = LogLevel.INFO,
    role: Annotated[
        Role,
        typer.Option(
            case_sensitive=False,
            help="What this process runs: all; or, on PostgreSQL, api (checks), intake (SMTP) "
            "or worker (imports, webhooks, retention); see docs/deployment.md",
        ),
    ] = Role.ALL,
) -> None:
    """Run the service: by default the HTTP API and, when configured, the SMTP sink in one
    process; with --role, one part of the default topology."""
    import uvicorn

    from app.db import run_migrations
    from app.logs import UVICORN_LOG_CONFIG, configure_logging
    from app.main import create_app

    settings = settings_or_exit()
    _check_role(settings, role)
    if role is Role.INTAKE:
        smtp(log_level=log_level, migrate=migrate)
        return
    configure_logging(log_level.value, settings.log_format)
    if migrate:
        run_migrations(settings)
    lower_priority(role)
    uvicorn.run(
        create_app(settings, role=role),
        host=host or settings.http_host,
        port=port or settings.http_port,
        log_level=log_level.value,
        log_config=UVICORN_LOG_CONFIG,
        access_log=False,
        **proxy_options(settings),
    )


def _check_role(settings: Settings, role: Role) -> None:
    """A split topology needs a store the processes share: the embedded SQLite store and its
    in-process cache belong to one process."""
    if role is not Role.ALL and settings.is_sqlite:
        err.print(f"[red]--role {role.value} needs PostgreSQL (STOPLIST_DATABASE_URL)[/red]")
        raise typer.Exit(2)


def proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's proxy options: X-Forwarded-For and -Proto are read only from a peer in
    ``STOPLIST_TRUSTED_PROXIES`` (set them there, not in uvicorn's FORWARDED_ALLOW_IPS)."""
    trusted = settings.trusted_proxies
    allowed: list[str] | str = "*" if "*" in trusted else list(trusted)
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": allowed or None}


def migrate_cmd() -> None:
    """Apply database migrations (alembic upgrade head)."""
    from app.db import run_migrations

    settings = settings_or_exit()
    run_migrations(settings)
    out.print("database is at the latest schema")


def smtp(
    log_level: LogLevelOpt = LogLevel.INFO,
    migrate: Annotated[bool, typer.Option(help="Apply migrations first")] = True,
) -> None:
    """Run the SMTP sink and the intake processing alone (no HTTP API), at a lower CPU priority
    than the API: the same as ``serve --role intake``."""
    import signal

    from app.db import run_migrations
    from app.intake.smtp import start_sink
    from app.logs import configure_logging

    settings = settings_or_exit()
    configure_logging(log_level.value, settings.log_format)
    if migrate:
        run_migrations(settings)
    lower_priority(Role.INTAKE)

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

    run(go)
