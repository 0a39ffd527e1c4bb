"""Deliverability rates on both backends: counting, roll-ups, retention, /v1/stats and gauges."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from app.events import EventStore
from app.models import DeliveryEvent, RateCount
from app.rates import COUNTERS, prune, record_events
from app.rates.model import bucket_start, provider_of
from events import Batch, DeliveryKey, parse_pmta
from events.model import Event, EventKind, Source
from tests.app.test_policy import apply, dsn
from tests.conftest import Env

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def pmta_events() -> list[Event]:
    path = ROOT / "samples" / "events" / "pmta-01.csv"
    with path.open() as lines:
        return [e for e in parse_pmta(lines, path.name) if isinstance(e, Event)]


def event(kind: EventKind, recipient: str, outcome: str, time: datetime, **kw: Any) -> Event:
    return Event(
        source=kw.pop("source", Source.SENDGRID),
        kind=kind,
        recipient=recipient,
        outcome=outcome,
        reason="x",
        rule_id="x",
        dedupe_id=f"{recipient}{time}",
        location="test#0",
        time=time,
        **kw,
    )


async def record(env: Env, events: list[Event]) -> None:
    async with env.services.db.write() as s:
        await record_events(await s.connection(), events)


async def sums(env: Env, grain: str, by: str) -> dict[str, dict[str, int]]:
    dim = RateCount.__table__.c[by]
    q = (
        select(dim, *[func.sum(RateCount.__table__.c[c]) for c in COUNTERS])
        .where(RateCount.grain == grain)
        .group_by(dim)
    )
    async with env.services.db.read() as s:
        rows = (await s.execute(q)).all()
    return {k: {c: int(n) for c, n in zip(COUNTERS, ns, strict=True) if n} for k, *ns in rows}


def test_provider_comes_from_the_classifier_table() -> None:
    assert provider_of("a@gmail.com") == "gmail"
    assert provider_of("a@hotmail.co.uk") == "microsoft"
    assert provider_of("a@aol.com") == "yahoo"
    assert provider_of("a@icloud.com") == "apple"
    assert provider_of("a@example.com") == "other"
    # a Workspace domain answered by Google's MX is Gmail
    assert provider_of("a@example.com", "aspmx.l.google.com") == "gmail"


def test_buckets_align() -> None:
    t = datetime(2026, 1, 5, 10, 7, 31, tzinfo=UTC)
    assert bucket_start(t, "5m") == datetime(2026, 1, 5, 10, 5, tzinfo=UTC)
    assert bucket_start(t, "1h") == datetime(2026, 1, 5, 10, tzinfo=UTC)
    assert bucket_start(t, "1d") == datetime(2026, 1, 5, tzinfo=UTC)


async def test_record_events_counts_exactly(env: Env) -> None:
    await record(env, pmta_events())
    by_provider = await sums(env, "5m", "provider")
    assert by_provider == {
        "gmail": {"sent": 2, "delivered": 1, "bounced": 1, "hard": 1},
        "yahoo": {"deferred": 1},
        "other": {
            "sent": 5,
            "bounced": 5,
            "hard": 1,
            "soft": 2,
            "policy": 2,
            "expired": 1,
            "deferred": 2,
        },
    }
    assert set(await sums(env, "5m", "vmta")) == {
        "vmta-gmail-1",
        "vmta-other-1",
        "vmta-yahoo-1",
        "",
    }
    assert (await sums(env, "1h", "source")) == {
        "pmta": {
            "sent": 7,
            "delivered": 1,
            "bounced": 6,
            "hard": 2,
            "soft": 2,
            "policy": 2,
            "expired": 1,
            "deferred": 3,
        }
    }
    # a second batch adds to the same buckets
    await record(env, pmta_events())
    assert (await sums(env, "1d", "provider"))["gmail"] == {
        "sent": 4,
        "delivered": 2,
        "bounced": 2,
        "hard": 2,
    }


async def test_complaints_unsubscribes_and_drops(env: Env) -> None:
    await record(
        env,
        [
            event(EventKind.COMPLAINT, "a@gmail.com", "complaint", T0, stream="news"),
            event(EventKind.COMPLAINT, "b@gmail.com", "none", T0, stream="news"),  # not-spam
            event(EventKind.UNSUBSCRIBE, "c@gmail.com", "unsubscribe", T0, stream="news"),
            event(EventKind.DROPPED, "d@gmail.com", "none", T0, stream="news"),
        ],
    )
    assert await sums(env, "5m", "stream") == {
        "news": {"complaint": 1, "unsubscribe": 1, "dropped": 1}
    }


async def test_nothing_is_counted_when_the_callers_transaction_rolls_back(env: Env) -> None:
    with pytest.raises(RuntimeError):
        async with env.services.db.write() as s:
            await record_events(await s.connection(), pmta_events())
            raise RuntimeError("the caller's insert failed")
    assert await sums(env, "5m", "provider") == {}


async def test_rollups_equal_the_sum_of_their_buckets(env: Env) -> None:
    events = [
        event(
            kind,
            f"r{i}@{domain}",
            outcome,
            T0 + timedelta(minutes=7 * i),
            stream=stream,
            ip="192.0.2.7",
        )
        for i in range(60)
        for kind, outcome, domain, stream in [
            (EventKind.DELIVERED, "none", "gmail.com", "news"),
            (EventKind.BOUNCE, ("hard", "soft", "policy")[i % 3], "yahoo.com", "receipts"),
            (EventKind.DEFERRED, "soft", "outlook.com", "news"),
        ]
    ]
    await record(env, events[:100])
    await record(env, events[100:])
    five = await sums(env, "5m", "stream")
    hour = await sums(env, "1h", "stream")
    day = await sums(env, "1d", "stream")
    assert five == hour == day
    assert day["news"] == {"sent": 60, "delivered": 60, "deferred": 60}
    assert day["receipts"] == {"sent": 60, "bounced": 60, "hard": 20, "soft": 20, "policy": 20}
    async with env.services.db.read() as s:
        grains = dict(
            (await s.execute(select(RateCount.grain, func.count()).group_by(RateCount.grain))).all()
        )
    # 60 events 7 minutes apart span 7 hours and one day; one 5m bucket each
    assert grains["1d"] == 3 and grains["1h"] == 3 * 7 and grains["5m"] == 3 * 60


async def test_retention_deletes_old_buckets_per_grain(env: Env) -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    ages = [timedelta(days=d) for d in (1, 3, 40, 500)]
    await record(env, [event(EventKind.DELIVERED, "a@gmail.com", "none", now - a) for a in ages])
    deleted = await prune(env.services.db, env.settings, now)
    # 5m keeps 2 days, 1h 35 days, 1d 400 days (the defaults)
    assert deleted == {"5m": 3, "1h": 2, "1d": 1}
    async with env.services.db.read() as s:
        left = (await s.execute(select(RateCount.grain, RateCount.bucket))).all()
    assert sorted((g, now - b > timedelta(days=2)) for g, b in left) == [
        ("1d", False),
        ("1d", True),
        ("1d", True),
        ("1h", False),
        ("1h", True),
        ("5m", False),
    ]
    assert await prune(env.services.db, env.settings, now) == {"5m": 0, "1h": 0, "1d": 0}


async def test_stats_api(env: Env) -> None:
    await record(env, pmta_events())
    params = {"by": "provider", "granularity": "1h", "since": "2026-01-05T00:00:00Z"}
    params["until"] = "2026-01-06T00:00:00Z"
    r = await env.client.get("/v1/stats", params=params, headers=env.auth("read"))
    assert r.status_code == 200, r.text
    body = r.json()
    groups = {g["key"]: g for g in body["groups"]}
    assert set(groups) == {"gmail", "yahoo", "other"}
    assert groups["gmail"]["counts"]["sent"] == 2
    assert groups["gmail"]["rates"]["hard_rate"] == 0.5
    assert groups["gmail"]["rates"]["complaint_rate"] == 0.0
    assert groups["yahoo"]["rates"]["hard_rate"] is None  # nothing sent
    assert groups["yahoo"]["rates"]["deferral_rate"] == 1.0
    # frank's expiry is logged on Jan 8th: outside the window
    assert groups["other"]["counts"]["sent"] == 4
    assert [p["bucket"] for p in body["series"]] == ["2026-01-05T10:00:00Z"] * 3
    assert body["since"] == "2026-01-05T00:00:00Z"

    r = await env.client.get(
        "/v1/stats",
        params={"by": "ip", "granularity": "1d", "since": "2026-01-01T00:00:00Z"},
        headers=env.auth("read"),
    )
    assert r.status_code == 200, r.text
    assert {g["key"] for g in r.json()["groups"]} == {
        "198.51.100.10",
        "198.51.100.11",
        "198.51.100.12",
        "",
    }


async def test_stats_api_refuses(env: Env) -> None:
    assert (await env.client.get("/v1/stats")).status_code == 401
    assert (await env.client.get("/v1/stats", headers=env.auth("check"))).status_code == 403
    for params in ({"since": "yesterday"}, {"by": "recipient"}, {"granularity": "1w"}):
        r = await env.client.get("/v1/stats", params=params, headers=env.auth("read"))
        assert r.status_code == 422, (params, r.text)


async def test_stats_api_windows(env: Env) -> None:
    async def window(**params: str) -> tuple[str, str, int]:
        r = await env.client.get("/v1/stats", params=params, headers=env.auth("read"))
        assert r.status_code == 200, r.text
        body = r.json()
        return body["since"], body["until"], len(body["series"])

    await record(env, pmta_events())
    # an empty window answers nothing
    since, until = "2026-01-06T00:00:00Z", "2026-01-05T00:00:00Z"
    assert await window(since=since, until=until) == (since, until, 0)
    # too many buckets: since is raised to 2016 buckets before until
    until = "2026-01-05T10:30:00Z"
    assert await window(granularity="5m", since="2020-01-01T00:00:00Z", until=until) == (
        "2025-12-29T10:30:00Z",
        until,
        3,
    )
    # the default: the 24 hours before until, since floored to its bucket
    assert (await window(until="2026-01-05T10:30:10Z"))[0] == "2026-01-04T10:00:00Z"
    assert (await window(until="0001-01-01T00:00:00Z"))[2] == 0


async def test_bounces_arriving_as_mail_are_counted(env: Env) -> None:
    await apply(env, dsn("jane@gmail.com"))
    await apply(env, dsn("joe@example.org", "552 5.2.2 <joe@example.org>: Mailbox full"))
    assert await sums(env, "5m", "provider") == {
        "gmail": {"sent": 1, "bounced": 1, "hard": 1},
        "other": {"sent": 1, "bounced": 1, "soft": 1},
    }
    assert set(await sums(env, "1d", "source")) == {"mail"}
    assert set(await sums(env, "1d", "stream")) == {"newsletter"}


async def test_gauges_of_the_last_hour(env: Env) -> None:
    now = datetime.now(UTC)
    await record(
        env,
        [
            event(EventKind.DELIVERED, f"d{i}@gmail.com", "none", now, stream="news")
            for i in range(199)
        ]
        + [
            event(EventKind.BOUNCE, "h@gmail.com", "hard", now, stream="news"),
            event(EventKind.DELIVERED, "old@gmail.com", "none", now - timedelta(hours=2)),
        ],
    )
    import app.http.routes.health as health

    health._gauge_refreshed = 0.0
    r = await env.client.get("/metrics", headers=env.auth("check"))
    assert r.status_code == 200
    text = r.text
    assert 'stoplist_rate_last_hour{provider="gmail",rate="hard_rate",stream="news"} 0.005' in text
    assert (
        'stoplist_rate_counts_last_hour{counter="sent",provider="gmail",stream="news"} 200.0'
        in text
    )
    assert 'stream=""' not in text  # the delivery two hours ago is outside the window


def test_rollup_command_applies_retention(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from app.cli import app
    from app.db import Database
    from app.settings import Settings

    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("STOPLIST_DATABASE_URL", url)
    monkeypatch.delenv("STOPLIST_REDIS_URL", raising=False)
    runner = CliRunner()
    assert runner.invoke(app, ["migrate"]).exit_code == 0

    async def seed() -> None:
        db = Database(Settings(database_url=url))
        now = datetime.now(UTC)
        async with db.write() as s:
            await record_events(
                await s.connection(),
                [event(EventKind.DELIVERED, "a@gmail.com", "none", now - timedelta(days=3))],
            )
        await db.dispose()

    asyncio.run(seed())
    result = runner.invoke(app, ["rates", "rollup", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"deleted": {"5m": 1, "1h": 0, "1d": 0}}


async def test_concurrent_batches_on_the_same_buckets_add_up(pg_env: Env) -> None:
    """Batches naming the same buckets in different orders neither deadlock nor lose a count."""
    domains = ["gmail.com", "yahoo.com", "outlook.com", "icloud.com", "example.com"]
    batches = [
        [
            event(EventKind.DELIVERED, f"r{i}@{d}", "none", T0, stream=f"s{i % 3}")
            for i, d in enumerate(domains[k % 5 :] + domains[: k % 5])
        ][:: 1 if k % 2 else -1]
        for k in range(20)
    ]
    await asyncio.gather(*(record(pg_env, b) for b in batches))
    totals = await sums(pg_env, "5m", "provider")
    assert {p: c["sent"] for p, c in totals.items()} == {
        "gmail": 20,
        "yahoo": 20,
        "microsoft": 20,
        "apple": 20,
        "other": 20,
    }


async def test_deliveries_counted_by_key_add_up_as_their_events_do(env: Env) -> None:
    """The log ingest's fast path (``parse_pmta(deliveries=...)`` then ``EventStore.record``):
    the same buckets as every line recorded as an Event, without a stored row per delivery."""
    path = ROOT / "samples" / "events" / "pmta-01.csv"
    counted: dict[DeliveryKey, int] = {}
    with path.open() as lines:
        items = list(parse_pmta(lines, path.name, deliveries=counted))
    others = [e for e in items if isinstance(e, Event)]
    assert sum(counted.values()) == 1 and all(e.kind is not EventKind.DELIVERED for e in others)
    result = await EventStore(env.services).record(Batch(events=others, deliveries=counted))
    assert (result.new, result.duplicate) == (len(pmta_events()), 0)
    dims = ("provider", "vmta", "ip", "stream", "source")
    fast = {(grain, by): await sums(env, grain, by) for grain in ("5m", "1d") for by in dims}
    assert fast[("5m", "provider")]["gmail"] == {"sent": 2, "delivered": 1, "bounced": 1, "hard": 1}
    # Every line again, each as an Event (the general path): each bucket exactly doubles.
    await record(env, pmta_events())
    for (grain, by), before in fast.items():
        doubled = {k: {c: 2 * n for c, n in v.items()} for k, v in before.items()}
        assert await sums(env, grain, by) == doubled, (grain, by)
    async with env.services.db.read() as s:
        stored = await s.scalar(select(func.count()).select_from(DeliveryEvent))
    assert stored == len(others)


def test_deliveries_merged_per_bucket_count_the_same_buckets() -> None:
    """The per-second delivery keys of a batch are merged per 5-minute bucket before counting:
    every grain's buckets and counts stay what they were; a time counted as ``now`` (none, or
    too far ahead) is kept apart."""
    from app.rates.model import delivery_occurrence
    from app.rates.recorder import _sum, merge_deliveries

    now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    deliveries: dict[DeliveryKey, int] = {}
    for second in range(-4000, 400, 7):
        for domain in ("gmail.com", "example.net"):
            time = now + timedelta(seconds=second)
            key = (Source.PMTA, time, domain, "mx1.example.net", "news", "192.0.2.1", None, "v1")
            deliveries[key] = second % 5 + 1
    deliveries[(Source.PMTA, None, "example.net", None, None, None, None, None)] = 3
    merged = merge_deliveries(deliveries, now)
    assert len(merged) < len(deliveries) / 10
    assert sum(merged.values()) == sum(deliveries.values())
    assert merge_deliveries(merged, now) == merged  # so a caller may merge ahead

    def counted(keys: dict[DeliveryKey, int]) -> dict[Any, dict[str, int]]:
        return _sum((delivery_occurrence(k, now), n) for k, n in keys.items())

    assert counted(merged) == counted(deliveries)


async def test_batches_prepared_ahead_record_what_record_alone_does(env: Env) -> None:
    """The ingest prepares the next batch (``EventStore.prepare``: plans, rows, deliveries merged)
    while the one before commits, and hands that to ``record``. The result is the same as the
    one-call path; a ``Prepared`` of another batch is not used for this one."""
    path = ROOT / "samples" / "events" / "pmta-01.csv"
    counted: dict[DeliveryKey, int] = {}
    with path.open() as lines:
        items = list(parse_pmta(lines, path.name, deliveries=counted))
    others = [e for e in items if isinstance(e, Event)]
    first, second = others[: len(others) // 2], others[len(others) // 2 :]
    assert first and second and any(e.outcome == "hard" for e in others)
    store = EventStore(env.services)
    a, b = Batch(events=first, deliveries=counted), Batch(events=second)
    prepared_a = await store.prepare(a, count_deliveries=True)
    assert prepared_a.events == first and sum(prepared_a.deliveries.values()) == 1
    # b handed a's preparation: b's own events are recorded, not a's.
    result_b = await store.record(b, count_deliveries=True, prepared=prepared_a)
    assert (result_b.new, result_b.duplicate) == (len(second), 0)
    result_a = await store.record(a, count_deliveries=True, prepared=prepared_a)
    assert (result_a.new, result_a.duplicate) == (len(first) + 1, 0)
    assert result_a.suppressed + result_b.suppressed == len(
        {e.recipient for e in others if e.outcome == "hard"}
    )
    gmail = (await sums(env, "5m", "provider"))["gmail"]
    assert gmail == {"sent": 2, "delivered": 1, "bounced": 1, "hard": 1}
    async with env.services.db.read() as s:
        stored = await s.scalar(select(func.count()).select_from(DeliveryEvent))
    assert stored == len(others)
    for e in others:
        if e.outcome == "hard":
            assert e.recipient is not None
            entry = await env.services.suppressions.get(e.recipient)
            assert entry["suppressions"] and entry["suppressions"][0]["outcome"] == "hard"


async def test_a_deferred_refresh_reaches_the_cache_in_order_and_on_settle(env: Env) -> None:
    """``EventStore(defer_refresh=True)`` (the log ingest): ``record`` returns once the batch is
    committed, the cache's refresh of what it suppressed still to run; the next ``record`` waits
    for it, and ``settle`` for the last one."""
    path = ROOT / "samples" / "events" / "pmta-01.csv"
    with path.open() as lines:
        items = [e for e in parse_pmta(lines, path.name) if isinstance(e, Event)]
    hard = sorted({e.recipient for e in items if e.outcome == "hard" and e.recipient})
    assert hard
    cache = env.services.cache
    store = EventStore(env.services, defer_refresh=True)
    result = await store.record(Batch(events=items))
    assert result.suppressed >= len(hard)
    assert await cache.get_many(hard) == [None] * len(hard)  # committed, not refreshed yet
    bounce = next(e for e in items if e.outcome == "hard")
    later = dataclasses.replace(bounce, recipient="later@example.org", dedupe_id="later-1")
    assert (await store.record(Batch(events=[later]))).suppressed == 1
    # The first batch's refresh ran before the second's was started.
    assert all(found is not None for found in await cache.get_many(hard))
    assert await cache.get_many(["later@example.org"]) == [None]
    await store.settle()
    assert (await cache.get_many(["later@example.org"]))[0] is not None
