"""All SQL on ``api_keys`` (and the audit entries written with a key's creation or revocation)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from app.db import Database
from app.errors import Conflict, NotFound
from app.models import ApiKey, AuditEntry, utcnow


async def active_by_hash(db: Database, digest: str) -> ApiKey | None:
    async with db.read() as s:
        return (
            await s.scalars(
                select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
            )
        ).one_or_none()


async def touch(db: Database, key_id: int) -> None:
    async with db.write() as s:
        await s.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow()))


async def insert(db: Database, row: ApiKey, *, actor: str) -> None:
    """Store a new key with its audit entry; :class:`Conflict` when the name is taken."""
    try:
        async with db.write() as s:
            s.add(row)
            s.add(
                AuditEntry(
                    actor=actor, action="key_create", detail={"name": row.name, "scope": row.scope}
                )
            )
    except IntegrityError:
        raise Conflict(f"a key named {row.name!r} already exists") from None


async def revoke(db: Database, name: str, *, actor: str) -> None:
    async with db.write() as s:
        row = (
            await s.scalars(select(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None)))
        ).one_or_none()
        if row is None:
            raise NotFound(f"no active key named {name!r}")
        row.revoked_at = utcnow()
        s.add(AuditEntry(actor=actor, action="key_revoke", detail={"name": name}))


async def listing(db: Database) -> list[dict[str, Any]]:
    async with db.read() as s:
        rows = (await s.scalars(select(ApiKey).order_by(ApiKey.id))).all()
    return [
        {
            "name": r.name,
            "scope": r.scope,
            "prefix": r.prefix,
            "created_at": r.created_at,
            "last_used_at": r.last_used_at,
            "revoked_at": r.revoked_at,
        }
        for r in rows
    ]


async def count_active(db: Database) -> int:
    async with db.read() as s:
        n = await s.scalar(
            select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))
        )
    return int(n or 0)
