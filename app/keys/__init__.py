"""API keys: bearer tokens with one scope each, stored hashed, compared in constant time.

``model`` says what a key and a scope are; ``repository`` holds all SQL on ``api_keys``;
``service`` (:class:`KeyService`) verifies keys with an in-process cache and creates, revokes
and lists them.

May import: ``app.db``, ``app.models``, ``app.errors``. Never the HTTP layer, the CLI or the
container.
"""

from app.keys.model import (
    ALL_SCOPES,
    BOOTSTRAP_NAME,
    KEY_PREFIX,
    SCOPES,
    KeyInfo,
    generate_key,
    hash_key,
    scope_allows,
)
from app.keys.service import KeyService

__all__ = [
    "ALL_SCOPES",
    "BOOTSTRAP_NAME",
    "KEY_PREFIX",
    "SCOPES",
    "KeyInfo",
    "KeyService",
    "generate_key",
    "hash_key",
    "scope_allows",
]
