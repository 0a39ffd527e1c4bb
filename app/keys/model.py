"""What a key and a scope are.

Scopes are ordered, each including the ones before it: ``check`` (pre-send check only) < ``read``
(look up, list, history, export) < ``write`` (support staff: suppress, unsuppress, import) <
``admin`` (keys, removing complaint suppressions with force).

``events`` is a side scope, outside that order: it may only post delivery events
(``POST /v1/events/...``, an MTA's log hook or an ESP's webhook); ``admin`` includes it,
``write`` and ``read`` do not.

A key is ``sl_`` + 40 URL-safe characters (240 random bits), so a single SHA-256 is enough to store
it; the first 8 characters are kept in clear as a prefix to recognise keys in listings.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

SCOPES: tuple[str, ...] = ("check", "read", "write", "admin")
RANK = {name: i for i, name in enumerate(SCOPES)}
SIDE_SCOPES: tuple[str, ...] = ("events",)
ALL_SCOPES: tuple[str, ...] = SCOPES + SIDE_SCOPES
KEY_PREFIX = "sl_"
KEY_RE = re.compile(r"^sl_[A-Za-z0-9_-]{40}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
BOOTSTRAP_NAME = "bootstrap-admin"


def scope_allows(granted: str, required: str) -> bool:
    if required in SIDE_SCOPES:
        return granted in (required, "admin")
    return RANK.get(granted, -1) >= RANK[required]


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(30)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: int
    name: str
    scope: str
