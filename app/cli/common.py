"""What every command shares: settings (or a clean exit), the services of one command, output."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from app.container import Services, build_services
from app.errors import AppError
from app.settings import Settings, SettingsError, load_settings

T = TypeVar("T")

out = Console()
err = Console(stderr=True)
CLI_ACTOR = "cli"

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    services = build_services(settings, auto_rebuild=False)
    try:
        yield services
    finally:
        await services.keys.close()
        await services.cache.close()
        await services.db.dispose()


def run(fn: Callable[[Services], Awaitable[T]]) -> T:
    settings = settings_or_exit()

    async def go() -> T:
        async with open_services(settings) as services:
            return await fn(services)

    try:
        return asyncio.run(go())
    except AppError as exc:
        err.print(f"[red]error ({exc.error}):[/red] {exc.detail}")
        raise typer.Exit(1) from None


def dump(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=_json_default, sort_keys=True) + "\n")


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(type(value).__name__)


def short_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"
