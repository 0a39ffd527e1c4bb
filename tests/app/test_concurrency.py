"""Every writer at once on the same addresses: bounce and complaint intake, API suppress, API
unsuppress and bulk import, in rounds of ``asyncio.gather``, on SQLite and on PostgreSQL + Redis.

Properties (``app.suppressions``'s contract):

* **no lost or misordered write**: each (address, scope) row ends as the no-weakening rule folds
  that row's own events in the order they were written (complaint > hard > manual > unsubscribe >
  soft; permanence beats expiry; only an unsuppress removes; a removed entry comes back fresh).
  The events of one row are written under that row's lock, so their ids are its serial order.
* **a complete audit trail**: exactly one event for every write the writers were told happened
  (each intake suppression, each API suppress, each row an unsuppress removed, each row an import
  inserted or changed), one audit entry for each manual action and each import, and nothing for a
  redelivered intake message, a refused unsuppress or an import row that changed nothing.
* **cache == database** for every address afterwards.
* no writer fails (no 5xx, no deadlock surfacing as an error).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from app.feedback import Envelope, apply_analysis
from app.models import AuditEntry, Event, Suppression
from app.suppression import STRENGTH
from dsn.analysis import analyse_message
from tests.conftest import Env

ADDRESSES = [f"racer{i}@example.com" for i in range(6)]
ROUNDS = 3
NEWS = "news"
# Reasons the writers use, so the events say which requests expire (the events table has no
# expiry column): these are soft entries with an expires_at; everything else is permanent.
EXPIRING_REASONS = {"api_soft", "import_soft"}
SUPPRESS_KINDS = {"bounce", "complaint", "manual_suppress", "import"}
_message_ids = itertools.count(50_000)


def bounce(rcpt: str) -> bytes:
    """A minimal RFC 3464 hard bounce (5.1.1) for one recipient."""
    text = f"""From: MAILER-DAEMON@mx.example.org
To: bounces@bounces.example.net
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; {rcpt}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown

--B--
"""
    return text.replace("\n", "\r\n").encode()


def complaint(rcpt: str) -> bytes:
    """A minimal RFC 5965 abuse report about one recipient."""
    text = f"""From: <feedback@example.org>
To: <fbl@fbl.example.net>
Subject: Abuse report
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="F"

--F
Content-Type: text/plain

This is an email abuse report.

--F
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: ExampleFBL/1.0
Version: 1
Original-Rcpt-To: {rcpt}

--F
Content-Type: message/rfc822

From: News <news@example.net>
To: {rcpt}
Subject: Offers

Offers inside.

--F--
"""
    return text.replace("\n", "\r\n").encode()


@dataclass
class Tally:
    """What the writers were told they did: the audit trail must say exactly this."""

    intake_applied: Counter[str] = field(default_factory=Counter)  # event kind -> suppressions
    intake_redelivered: int = 0
    api_suppressed: int = 0
    api_unsuppressed: int = 0  # unsuppress requests that removed something
    api_removed: int = 0  # rows they removed
    api_refused: int = 0  # unsuppress of a complaint without admin + force (403)
    api_absent: int = 0  # unsuppress with nothing active (404)
    imports: int = 0
    import_changed: int = 0  # rows inserted or updated
    import_rows: int = 0
    errors: list[str] = field(default_factory=list)


async def intake(env: Env, tally: Tally, rng: random.Random) -> None:
    """Bounces and complaints through the intake's apply path (parse, policy, write, cache), one
    message id each as the stored messages have; one of them delivered twice."""
    for address in rng.sample(ADDRESSES, 4):
        raw, kind = (
            (complaint(address), "complaint")
            if rng.random() < 0.3
            else (
                bounce(address),
                "bounce",
            )
        )
        message_id = next(_message_ids)
        envelope = Envelope(mail_from="", rcpt_to=["bounces@bounces.example.net"])
        analysis = analyse_message(raw, envelope_rcpt=envelope.rcpt_to[0])
        result = await apply_analysis(
            env.services, message_id=message_id, analysis=analysis, envelope=envelope
        )
        if result.applied != 1:
            tally.errors.append(f"intake {kind} {address}: {result}")
        tally.intake_applied[kind] += result.applied
        if rng.random() < 0.25:
            # A redelivery after an ambiguous commit: the same stored message, applied again.
            again = await apply_analysis(
                env.services, message_id=message_id, analysis=analysis, envelope=envelope
            )
            tally.intake_redelivered += 1
            if again.applied != 0:
                tally.errors.append(f"redelivered {kind} {address} applied again: {again}")


async def api_suppress(env: Env, tally: Tally, rng: random.Random) -> None:
    soon = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    for address in rng.sample(ADDRESSES, 4):
        body: dict[str, Any] = rng.choice(
            [
                {"outcome": "manual", "reason": "api_manual"},
                {"outcome": "soft", "reason": "api_soft", "expires_at": soon},
                {"outcome": "unsubscribe", "reason": "api_unsub", "stream": NEWS},
            ]
        )
        r = await env.client.put(
            f"/v1/suppressions/{address}", json=body | {"note": "race"}, headers=env.auth("write")
        )
        if r.status_code != 200:
            tally.errors.append(f"PUT {address} {body}: {r.status_code} {r.text}")
            continue
        tally.api_suppressed += 1


async def api_unsuppress(env: Env, tally: Tally, rng: random.Random) -> None:
    for address in rng.sample(ADDRESSES, 3):
        # Support staff without force (a complaint must stay) and admins with it.
        admin = rng.random() < 0.4
        params = {"reason": "concurrency test"} | ({"force": "true"} if admin else {})
        r = await env.client.delete(
            f"/v1/suppressions/{address}",
            params=params,
            headers=env.auth("admin" if admin else "write"),
        )
        if r.status_code == 200:
            tally.api_unsuppressed += 1
            tally.api_removed += len(r.json()["removed"])
        elif r.status_code == 403 and not admin:
            tally.api_refused += 1
        elif r.status_code == 404:
            tally.api_absent += 1
        else:
            tally.errors.append(f"DELETE {address} admin={admin}: {r.status_code} {r.text}")


async def bulk_import(env: Env, tally: Tally, rng: random.Random) -> None:
    soon = (datetime.now(UTC) + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = ["address,outcome,reason,stream,expires_at"]
    for address in rng.sample(ADDRESSES, len(ADDRESSES)):  # the file's order: shuffled
        lines.append(
            rng.choice(
                [
                    f"{address},hard,import_hard,,",
                    f"{address},soft,import_soft,,{soon}",
                    f"{address},unsubscribe,import_unsub,{NEWS},",
                    f"{address},complaint,import_complaint,,",
                ]
            )
        )
    r = await env.client.post(
        "/v1/suppressions/import",
        content=("\n".join(lines) + "\n").encode(),
        headers=env.auth("write") | {"content-type": "text/csv"},
    )
    if r.status_code != 200:
        tally.errors.append(f"import: {r.status_code} {r.text}")
        return
    summary = r.json()
    tally.imports += 1
    tally.import_rows += summary["rows"]
    tally.import_changed += summary["inserted"] + summary["updated"]
    if summary["invalid"]:
        tally.errors.append(f"import had invalid rows: {summary['errors']}")


def fold(events: list[Event]) -> tuple[str, str, bool] | None:
    """The no-weakening rule of ``merge_into`` over one row's events: (outcome, reason,
    permanent) when active at the end, None when removed (or never suppressed)."""
    state: tuple[str, str, bool] | None = None
    for e in events:
        if e.kind == "unsuppress":
            state = None
            continue
        assert e.kind in SUPPRESS_KINDS, e.kind
        assert e.outcome is not None and e.reason is not None
        permanent = e.reason not in EXPIRING_REASONS
        if state is None:
            state = (e.outcome, e.reason, permanent)
            continue
        outcome, reason, was_permanent = state
        if STRENGTH[e.outcome] >= STRENGTH[outcome]:
            outcome, reason = e.outcome, e.reason
        state = (outcome, reason, was_permanent or permanent)
    return state


async def test_all_writers_at_once_keep_the_rules_and_the_audit_trail(env: Env) -> None:
    tally = Tally()
    for round_ in range(ROUNDS):
        # One generator per writer: what each writer does is the same whatever the interleaving.
        def rng(writer: str, n: int) -> random.Random:
            return random.Random(f"{round_}-{writer}-{n}")  # noqa: B023 - used at once

        await asyncio.gather(
            *(intake(env, tally, rng("intake", n)) for n in range(3)),
            *(api_suppress(env, tally, rng("suppress", n)) for n in range(4)),
            *(api_unsuppress(env, tally, rng("unsuppress", n)) for n in range(3)),
            *(bulk_import(env, tally, rng("import", n)) for n in range(2)),
        )
    assert not tally.errors, "\n".join(tally.errors)

    async with env.services.db.read() as s:
        rows = (await s.scalars(select(Suppression))).all()
        events = (await s.scalars(select(Event).order_by(Event.id))).all()
        audits = (
            await s.scalars(select(AuditEntry).where(AuditEntry.action != "key_create"))
        ).all()

    # --- the audit trail: one event per write the writers saw, one audit entry per manual action
    kinds = Counter(e.kind for e in events)
    assert kinds["bounce"] == tally.intake_applied["bounce"]
    assert kinds["complaint"] == tally.intake_applied["complaint"]
    assert kinds["manual_suppress"] == tally.api_suppressed
    assert kinds["unsuppress"] == tally.api_removed
    assert kinds["import"] == tally.import_changed
    assert set(kinds) <= SUPPRESS_KINDS | {"unsuppress"}, kinds
    actions = Counter(a.action for a in audits)
    assert actions == Counter(
        {"suppress": tally.api_suppressed, "unsuppress": tally.api_removed, "import": tally.imports}
    )
    # Every kind of writer took part (how the unsuppresses ended depends on the interleaving).
    assert tally.intake_redelivered and tally.api_suppressed and tally.import_changed
    assert min(tally.intake_applied["bounce"], tally.intake_applied["complaint"]) > 0
    assert tally.api_unsuppressed + tally.api_refused + tally.api_absent == ROUNDS * 3 * 3

    # --- the final state of every row is its own events folded by the no-weakening rule
    by_row: dict[tuple[str, str], list[Event]] = {}
    for e in events:
        by_row.setdefault((e.address, e.scope), []).append(e)
    assert {(r.address, r.scope) for r in rows} == set(by_row)
    now = datetime.now(UTC)
    for row in rows:
        expected = fold(by_row[(row.address, row.scope)])
        active = row.removed_at is None and (row.expires_at is None or row.expires_at > now)
        actual = (row.outcome, row.reason, row.expires_at is None) if active else None
        history = [(e.id, e.kind, e.outcome, e.reason) for e in by_row[(row.address, row.scope)]]
        assert actual == expected, (row.address, row.scope, history)
    # Only an admin with force removes a complaint, however the writes interleaved.
    removed_complaints = [e for e in events if e.kind == "unsuppress" and e.outcome == "complaint"]
    assert {e.actor for e in removed_complaints} <= {"test-admin"}

    # --- the cache answers what the database says, for every address
    cached = await env.services.cache.get_many(ADDRESSES)
    from_db = await env.services.suppressions.entries_from_db(ADDRESSES)
    for address, c, d in zip(ADDRESSES, cached, from_db, strict=True):
        assert sorted(c or (), key=lambda e: e.scope) == sorted(d or (), key=lambda e: e.scope), (
            address
        )
