"""The ``stoplist`` command tree, in the order ``--help`` lists it. Each group's commands live in a
module of their own; this module only assembles them."""

from __future__ import annotations

import typer

from app.cli import bulk, intake, lists, rules, serve
from app.cli.events import events_app
from app.cli.ingest import ingest_app
from app.cli.keys import keys_app
from app.cli.lists import cache_app
from app.cli.rates import rates_app
from app.cli.rules import rules_app
from app.cli.tokens import token_app
from app.cli.webhooks import deliver, webhooks_app

app = typer.Typer(
    name="stoplist",
    help="Bounce, feedback-loop and suppression service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help pages: the rich ones print a <bool> type beside every flag.
    rich_markup_mode=None,
)
app.add_typer(keys_app, name="keys")
app.add_typer(cache_app, name="cache")
app.add_typer(rules_app, name="rules")
app.add_typer(token_app, name="token")
app.add_typer(events_app, name="events")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(ingest_app, name="ingest")
app.command()(serve.serve)
app.command("migrate")(serve.migrate_cmd)
app.command()(serve.smtp)
app.command()(intake.reprocess)
app.command()(intake.purge)
app.command()(lists.check)
app.command()(lists.suppress)
app.command()(lists.unsuppress)
app.command("import")(bulk.import_cmd)
app.command("export")(bulk.export_cmd)
app.command()(intake.parse)
app.command()(intake.explain)
app.command()(rules.classify)
app.add_typer(rates_app, name="rates")
app.command()(deliver)


def main() -> None:
    app()
