"""The outbox: which outbound events a change produces, their payloads, and the one INSERT that
writes them inside the transaction of the change (so an event exists if and only if the change
committed).

Callers are the lowest layers that write history: ``app.suppression`` (every suppression written,
merged or removed, with its ``events`` row) and ``app.feedback.applier`` (events recorded without
a suppression), plus the bulk import's one summary. Payloads follow the Standard Webhooks shape
``{"type", "timestamp", "data"}``; ``data.schema_version`` changes only when a field changes
meaning or disappears (fields may be added at any time). Documented in docs/webhooks.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Protocol

from sqlalchemy import Table, event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.models import OutboxEvent
from app.set_insert import UnnestInsert
from classifiers.providers import detect_provider, provider_from_text

SCHEMA_VERSION: Final = 1

SUPPRESSION_CREATED: Final = "suppression.created"
SUPPRESSION_UPDATED: Final = "suppression.updated"
SUPPRESSION_REMOVED: Final = "suppression.removed"
BOUNCE_RECORDED: Final = "bounce.recorded"
COMPLAINT_RECORDED: Final = "complaint.recorded"
UNSUBSCRIBE_RECORDED: Final = "unsubscribe.recorded"
SOFT_THRESHOLD_REACHED: Final = "soft_threshold.reached"
IMPORT_FINISHED: Final = "import.finished"

EVENT_TYPES: Final = (
    SUPPRESSION_CREATED,
    SUPPRESSION_UPDATED,
    SUPPRESSION_REMOVED,
    BOUNCE_RECORDED,
    COMPLAINT_RECORDED,
    UNSUBSCRIBE_RECORDED,
    SOFT_THRESHOLD_REACHED,
    IMPORT_FINISHED,
)

OUTBOX_TABLE: Table = OutboxEvent.__table__  # type: ignore[assignment]

# Detail fields a consumer may use, passed through when the history row has them.
_DETAIL_KEYS: Final = (
    "stream",
    "why",
    "note",
    "via",
    "remote_mta",
    "soft_bounces",
    "window_h",
    "reported_recipient",
    "expired_at",
)

# Where a change came from, by the ``source`` of its history row, when no message carried it.
_CHANNELS: Final = {"api": "api", "cli": "console", "import": "import", "unsubscribe": "http"}


def recorded_type(kind: str, source: str) -> str | None:
    """The ``*.recorded`` / ``soft_threshold.reached`` type of a history row, or None (manual
    actions, delay reports and removals say themselves through ``suppression.*`` only)."""
    if kind == "soft_threshold":
        return SOFT_THRESHOLD_REACHED
    if source == "bounce" and kind != "delay":
        return BOUNCE_RECORDED
    if source == "complaint":
        return COMPLAINT_RECORDED
    if source == "unsubscribe":
        return UNSUBSCRIBE_RECORDED
    return None


def channel(source: str, message_id: int | None, detail: Mapping[str, Any]) -> str:
    """``smtp`` for a change a received message caused; ``api``, ``console`` (CLI), ``import``,
    ``http`` (one-click unsubscribe link); an intake that names itself in ``detail["channel"]``
    (e.g. ``log`` or ``webhook``) is taken at its word."""
    named = detail.get("channel")
    if isinstance(named, str) and named:
        return named
    if message_id is not None:
        return "smtp"
    return _CHANNELS.get(source, source)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def history_data(event: Mapping[str, Any]) -> dict[str, Any]:
    """The payload fields of one ``events`` row (as the dict that is inserted)."""
    detail = event.get("detail") or {}
    scope = event["scope"]
    data: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "address": event["address"],
        "scope": scope,
        "stream": None if scope == "global" else scope,
        "kind": event["kind"],
        "outcome": event.get("outcome"),
        "reason": event.get("reason"),
        "rule_id": event.get("rule_id"),
        "source": channel(event["source"], event.get("message_id"), detail),
        "actor": event.get("actor"),
        "verified": bool(event.get("verified")),
        "message_id": event.get("message_id"),
        "at": _iso(event["created_at"]),
    }
    if event.get("status") or event.get("reply_code") or event.get("diagnostic"):
        data["reply"] = {
            "status": event.get("status"),
            "code": event.get("reply_code"),
            "diagnostic": event.get("diagnostic"),
        }
    if isinstance(detail, Mapping):
        for key in _DETAIL_KEYS:
            if key in detail and key not in data:
                data[key] = detail[key]
    if event["source"] == "bounce":
        data["provider"] = _provider(event, detail)
    return data


def _provider(event: Mapping[str, Any], detail: Mapping[str, Any]) -> str | None:
    """The mailbox provider behind a bounce: by the replying host, the recipient's domain, or
    the provider's own words in the reply."""
    remote = detail.get("remote_mta")
    found = detect_provider(
        remote_mta=remote if isinstance(remote, str) else None,
        recipient_domain=str(event["address"]).rpartition("@")[2],
    )
    diagnostic = event.get("diagnostic")
    if found is None and isinstance(diagnostic, str) and diagnostic:
        found = provider_from_text(diagnostic.lower())
    return found


def row(type_: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    """An outbox row; ``address`` is the delivery order key (events of one address are sent in
    commit order)."""
    return {
        "created_at": at,
        "type": type_,
        "address": data.get("address"),
        "scope": data.get("scope"),
        "data": data,
    }


class EntryState(Protocol):
    """What a ``suppression.*`` event says of the entry after the change."""

    outcome: str
    reason: str
    expires_at: datetime | None


def for_history(
    event: Mapping[str, Any], change: str | None, entry: EntryState | None = None
) -> list[dict[str, Any]]:
    """The outbox rows of one history row: its ``*.recorded`` event (if any), then the
    ``suppression.*`` event of ``change`` (``created`` / ``updated`` / ``removed`` / None), which
    carries the entry's state after the change (a merge keeps the stronger outcome)."""
    data = history_data(event)
    rows: list[dict[str, Any]] = []
    recorded = recorded_type(event["kind"], event["source"])
    if recorded is not None:
        rows.append(row(recorded, event["created_at"], data))
    if change is not None:
        changed = dict(data)
        if entry is not None:
            changed.update(outcome=entry.outcome, reason=entry.reason)
            if change != "removed":
                changed["expires_at"] = _iso(entry.expires_at)
        rows.append(row(f"suppression.{change}", event["created_at"], changed))
    return rows


def import_finished(at: datetime, summary: Mapping[str, Any]) -> dict[str, Any]:
    """The one summary row of a committed bulk import."""
    data = {"schema_version": SCHEMA_VERSION, "source": "import", "at": _iso(at), **summary}
    return row(IMPORT_FINISHED, at, data)


async def write(s: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` in the caller's transaction (one multi-row INSERT); the ``on_commit``
    callbacks run once it commits."""
    if rows:
        await s.execute(OUTBOX_TABLE.insert(), list(rows))
        wrote(s)


# The set-based insert of outbox rows (PostgreSQL), for a statement of the caller's that writes
# them with the change (``app.suppression.repository.insert_events``); then call ``wrote``.
SET_INSERT: Final = UnnestInsert(
    OUTBOX_TABLE, ("created_at", "type", "address", "scope", "data"), prefix="outbox_"
)


def wrote(s: AsyncSession) -> None:
    """Say that ``s`` wrote outbox rows (by ``SET_INSERT`` in a statement of the caller's): the
    ``on_commit`` callbacks run once it commits."""
    s.sync_session.info[_WROTE] = True


# Callbacks run after a commit that wrote outbox rows (a delivery worker in this process wakes
# at once instead of at its next poll). They run on the committing thread and must not block.
_ON_COMMIT: list[Callable[[], None]] = []
_WROTE: Final = "stoplist_outbox_wrote"


def on_commit(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` after every commit that wrote outbox rows; returns the unsubscriber."""
    _ON_COMMIT.append(callback)
    return lambda: _ON_COMMIT.remove(callback)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop(_WROTE, False):
        for callback in list(_ON_COMMIT):
            callback()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_WROTE, None)
