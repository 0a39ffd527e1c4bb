"""``stoplist keys``: API keys (create, list, revoke) and fresh key material."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from app.cli.common import (
    CLI_ACTOR,
    JsonOpt,
    dump,
    out,
    run,
    short_time,
)
from app.container import Services

keys_app = typer.Typer(help="API keys.", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A name for the key's holder")],
    scope: Annotated[str, typer.Option(help="check | read | write | admin | events")],
    as_json: JsonOpt = False,
) -> None:
    """Create a key and print it once (only its hash is stored)."""

    async def go(s: Services) -> tuple[Any, str]:
        return await s.keys.create(name, scope, actor=CLI_ACTOR)

    info, key = run(go)
    if as_json:
        dump({"name": info.name, "scope": info.scope, "key": key})
    else:
        out.print(f"created key [bold]{info.name}[/bold] (scope {info.scope}); it is shown once:")
        print(key)


@keys_app.command("list")
def keys_list(as_json: JsonOpt = False) -> None:
    """List keys (names, scopes, prefixes; never the keys)."""

    async def go(s: Services) -> list[dict[str, Any]]:
        return await s.keys.list()

    rows = run(go)
    if as_json:
        dump(rows)
        return
    table = Table("name", "scope", "prefix", "created", "last used", "revoked")
    for r in rows:
        table.add_row(
            r["name"],
            r["scope"],
            r["prefix"] + "…",
            short_time(r["created_at"]),
            short_time(r["last_used_at"]),
            short_time(r["revoked_at"]),
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Argument(help="The key's name (see `stoplist keys list`)")],
) -> None:
    """Revoke a key (effective on every replica within STOPLIST_AUTH_CACHE_TTL_S)."""

    async def go(s: Services) -> None:
        await s.keys.revoke(name, actor=CLI_ACTOR)

    run(go)
    out.print(f"revoked {name}")


@keys_app.command("generate")
@keys_app.command("new", hidden=True)  # its former name
def keys_new() -> None:
    """Print a fresh random key for STOPLIST_BOOTSTRAP_ADMIN_KEY; stores nothing (`keys create`
    stores one)."""
    from app.keys import generate_key

    print(generate_key())
