"""What every command shares: settings (or a clean exit), the services of one command, output."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
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


@contextmanager
def fast_event_loop() -> Iterator[None]:
    """uvloop (what ``serve`` runs on, through uvicorn) for the ``asyncio.run`` calls inside:
    ~25 % faster imports (``stoplist import``), and the delivery worker's rounds and requests
    (``stoplist deliver``) cost less CPU each."""
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
