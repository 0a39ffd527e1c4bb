"""``stoplist token``: signed return paths, references and unsubscribe links."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from app.cli.common import (
    JsonOpt,
    dump,
    err,
    out,
    settings_or_exit,
    short_time,
)

token_app = typer.Typer(
    help="Signed return paths, references and unsubscribe links.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _signer() -> Any:
    from app.container import build_signer

    signer = build_signer(settings_or_exit())
    if signer is None:
        err.print(
            "[red]no signing keys: set STOPLIST_SIGNING_KEYS (see `stoplist token generate-key`)"
        )
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
        dump({"recipient": recipient, **values})
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
            dump(answer)
        else:
            out.print(
                f"valid {use}: {ref.recipient} stream={ref.stream or '-'} "
                f"issued {short_time(ref.issued_at)} key {ref.key_id}",
                highlight=False,
            )
        return
    # The most telling reason: anything beats "malformed" (which every other use reports).
    reason = next((r for r in failures.values() if r != "malformed"), "malformed")
    if as_json:
        dump({"valid": False, "reason": reason, "by_use": failures})
    else:
        err.print(f"[red]invalid:[/red] {reason}")
    raise typer.Exit(1)


@token_app.command("generate-key")
@token_app.command("new-key", hidden=True)  # its former name
def token_new_key(
    key_id: Annotated[str, typer.Option(help="Key id: 1-8 of a-z 0-9")] = "k1",
) -> None:
    """Print a new signing key entry for STOPLIST_SIGNING_KEYS (put it first to sign with it)."""
    from app.signing import KEY_ID_RE, new_key_secret

    if not KEY_ID_RE.match(key_id):
        err.print("[red]key id: 1-8 of a-z 0-9[/red]")
        raise typer.Exit(2)
    sys.stdout.write(f"{key_id}:{new_key_secret()}\n")
