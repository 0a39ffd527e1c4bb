"""``stoplist events`` and the ``events`` key scope on the command line (embedded default)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import app
from app.container import build_services
from app.events import EventStore
from app.settings import Settings

runner = CliRunner()


@pytest.fixture
def db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("STOPLIST_DATABASE_URL", url)
    monkeypatch.delenv("STOPLIST_REDIS_URL", raising=False)
    assert runner.invoke(app, ["migrate"]).exit_code == 0
    return url


def _keep(url: str, subscribe_url: str) -> None:
    async def go() -> None:
        services = build_services(Settings(database_url=url))
        try:
            await EventStore(services).record_subscription(
                "SubscriptionConfirmation", "t", subscribe_url
            )
        finally:
            await services.keys.close()
            await services.db.dispose()

    asyncio.run(go())


def test_events_key_and_subscriptions(db_url: str) -> None:
    made = runner.invoke(app, ["keys", "create", "--name", "hook", "--scope", "events", "--json"])
    assert made.exit_code == 0, made.output
    assert json.loads(made.output)["scope"] == "events"

    _keep(db_url, "https://attacker.example/?Action=ConfirmSubscription")
    listed = runner.invoke(app, ["events", "subscriptions", "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert row["confirmed_at"] is None and row["topic_arn"] == "t"
    # A URL that is not SNS's is never fetched: the command fails and the row stays pending.
    confirmed = runner.invoke(app, ["events", "confirm-ses"])
    assert confirmed.exit_code == 1
    assert "not an SNS" in confirmed.output
    assert json.loads(runner.invoke(app, ["events", "subscriptions", "--json"]).output) == [row]
