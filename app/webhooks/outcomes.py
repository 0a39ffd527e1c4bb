"""How delivery attempts end, recorded: a round's outcomes in one statement, and each endpoint's
health (its failure record, and disabling an endpoint whose every attempt has failed for too
long). The caller owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.webhooks.repository import DELIVERIES, SUBSCRIPTIONS


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ends: ``sent``, ``pending`` again at ``next_at``, or ``dead``."""

    delivery_id: int
    subscription_id: int
    state: str
    status: int | None
    error: str | None
    next_at: datetime | None
    # Whether the endpoint had a failure record when the delivery was claimed: only then does
    # a success need to clear it (a round without failures writes no subscription row).
    was_failing: bool = True


_FINISH = (
    update(DELIVERIES)
    .where(DELIVERIES.c.id == bindparam("did"))
    .values(
        state=bindparam("st"),
        last_status=bindparam("code"),
        last_error=bindparam("err"),
        next_attempt_at=func.coalesce(
            bindparam("nxt", type_=DELIVERIES.c.next_attempt_at.type),
            DELIVERIES.c.next_attempt_at,
        ),
        finished_at=bindparam("fin", type_=DELIVERIES.c.finished_at.type),
    )
    .execution_options(synchronize_session=False)
)
# The same as one statement for a whole round's outcomes (a finished attempt, sent or dead,
# gets ``finished_at``; one to be retried keeps none).
_FINISH_PG = text(
    "UPDATE webhook_deliveries AS d SET state = v.st, last_status = v.code,"
    " last_error = v.err, next_attempt_at = COALESCE(v.nxt, d.next_attempt_at),"
    " finished_at = CASE WHEN v.st = 'pending' THEN NULL ELSE CAST(:now AS timestamptz) END"
    " FROM unnest(CAST(:ids AS bigint[]), CAST(:sts AS text[]), CAST(:codes AS integer[]),"
    " CAST(:errs AS text[]), CAST(:nxts AS timestamptz[])) AS v(id, st, code, err, nxt)"
    " WHERE d.id = v.id"
)


async def finish(
    s: AsyncSession,
    dialect: str,
    outcomes: Sequence[Outcome],
    now: datetime,
    disable_before: datetime,
) -> list[int]:
    """Record ``outcomes`` and each endpoint's health; the subscriptions disabled now (every
    attempt failed since before ``disable_before``). On PostgreSQL one statement, however many
    outcomes (the outcomes as arrays, joined by ``unnest``); on SQLite one executemany."""
    if outcomes and dialect == "postgresql":
        await s.execute(
            _FINISH_PG,
            {
                "ids": [o.delivery_id for o in outcomes],
                "sts": [o.state for o in outcomes],
                "codes": [o.status for o in outcomes],
                "errs": [o.error for o in outcomes],
                "nxts": [o.next_at for o in outcomes],
                "now": now,
            },
        )
    elif outcomes:
        params = [
            {
                "did": o.delivery_id,
                "st": o.state,
                "code": o.status,
                "err": o.error,
                "nxt": o.next_at,
                "fin": now if o.state != "pending" else None,
            }
            for o in outcomes
        ]
        await s.execute(_FINISH, params)
    return await _record_health(s, outcomes, now, disable_before)


async def _record_health(
    s: AsyncSession, outcomes: Sequence[Outcome], now: datetime, disable_before: datetime
) -> list[int]:
    """A success clears an endpoint's failure record (when its delivery was claimed while the
    record existed: a record made after the claim is cleared by the next success); a failure
    starts it (``failing_since``) and disables the endpoint once it is older than
    ``disable_before``."""
    sent = {o.subscription_id for o in outcomes if o.state == "sent"}
    failing = {o.subscription_id for o in outcomes} - sent
    recovered = {o.subscription_id for o in outcomes if o.state == "sent" and o.was_failing}
    if recovered:
        await s.execute(
            update(SUBSCRIPTIONS)
            .where(
                SUBSCRIPTIONS.c.id.in_(sorted(recovered)),
                SUBSCRIPTIONS.c.failing_since.isnot(None),
            )
            .values(failing_since=None)
        )
    if not failing:
        return []
    await s.execute(
        update(SUBSCRIPTIONS)
        .where(SUBSCRIPTIONS.c.id.in_(sorted(failing)), SUBSCRIPTIONS.c.failing_since.is_(None))
        .values(failing_since=now)
    )
    disabled = (
        await s.scalars(
            update(SUBSCRIPTIONS)
            .where(
                SUBSCRIPTIONS.c.id.in_(sorted(failing)),
                SUBSCRIPTIONS.c.enabled,
                SUBSCRIPTIONS.c.failing_since <= disable_before,
            )
            .values(
                enabled=False,
                updated_at=now,
                disabled_reason="every attempt failed since "
                + disable_before.isoformat(timespec="seconds"),
            )
            .returning(SUBSCRIPTIONS.c.id)
        )
    ).all()
    return list(disabled)
