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
from events import WEBHOOK_PARSERS

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


def _record_sample(url: str, name: str) -> list[dict[str, object]]:
    """Record ``samples/events/<name>`` as its webhook would; its expected events."""
    path = Path(__file__).resolve().parents[2] / "samples" / "events" / name
    source = name.split("-")[0]

    async def go() -> None:
        services = build_services(Settings(database_url=url))
        try:
            batch = WEBHOOK_PARSERS[source](path.read_bytes(), path.name)
            await EventStore(services).record(batch)
        finally:
            await services.keys.close()
            await services.db.dispose()

    asyncio.run(go())
    expected = json.loads(path.with_name(path.stem + ".expected.json").read_text())
    events: list[dict[str, object]] = expected["events"]
    return events


def test_events_errors_and_explain(db_url: str) -> None:
    _record_sample(db_url, "sendgrid-01.json")
    events = _record_sample(db_url, "ses-01.json")

    listed = runner.invoke(app, ["events", "errors", "--source", "sendgrid", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert sorted(r["location"] for r in rows) == ["sendgrid-01.json#12", "sendgrid-01.json#13"]
    assert {r["reason"] for r in rows} == {"no valid email", "unknown event 'exploded'"}
    table = runner.invoke(app, ["events", "errors"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "sendgrid-01.json#13" in table.output
    later = runner.invoke(app, ["events", "errors", "--since", "2999-01-01", "--json"])
    assert json.loads(later.output) == []
    bad = runner.invoke(app, ["events", "errors", "--since", "last week"])
    assert bad.exit_code == 2 and "ISO 8601" in bad.output

    [event] = [e for e in events if e["disagrees"]]
    shown = runner.invoke(app, ["events", "explain", str(event["dedupe_id"]), "--json"])
    assert shown.exit_code == 0, shown.output
    got = json.loads(shown.output)
    assert got["event"]["location"] == "ses-01.json#1"
    assert got["decision"]["rule_id"] == event["rule_id"]
    assert got["rule"]["source"] and got["disagreement"]
    text = runner.invoke(app, ["events", "explain", str(got["event"]["id"])])
    assert text.exit_code == 0, text.output
    assert "read at: ses-01.json#1" in text.output
    assert "vendor category: Permanent/General (to us: hard/invalid_address)" in text.output
    assert f"rule: {event['rule_id']}" in text.output and "source:" in text.output
    missing = runner.invoke(app, ["events", "explain", "nope"])
    assert missing.exit_code == 1 and "no stored delivery event" in missing.output
