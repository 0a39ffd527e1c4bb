"""Signing keys: ``STOPLIST_SIGNING_KEYS`` parsed and checked, and fresh secrets for new keys."""

from __future__ import annotations

import base64
import binascii
import re
import secrets

from app.signing.model import KEY_ID_RE, MIN_SECRET_BYTES, SigningKey


def parse_signing_keys(text: str) -> list[SigningKey]:
    """``"k2:<base64>,k1:<base64>"`` -> keys, the first being the one that signs.

    Raises ``ValueError`` (without echoing any secret) for a bad id, a secret that is not base64,
    shorter than 32 bytes, or that looks like a placeholder.
    """
    keys: list[SigningKey] = []
    seen: set[str] = set()
    for n, part in enumerate((p.strip() for p in text.split(",")), start=1):
        if not part:
            continue
        kid, sep, encoded = part.partition(":")
        kid = kid.strip()
        if not sep or not KEY_ID_RE.match(kid):
            raise ValueError(
                f"entry {n}: use <key id>:<base64 secret>, key id 1-8 of a-z 0-9 "
                "(generate one with `stoplist token generate-key`)"
            )
        if kid in seen:
            raise ValueError(f"key id {kid!r} appears twice")
        seen.add(kid)
        secret = decode_secret(encoded.strip())
        if secret is None:
            raise ValueError(f"key {kid!r}: the secret is not base64")
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"key {kid!r}: the secret must decode to at least {MIN_SECRET_BYTES} bytes "
                f"(got {len(secret)}); generate one with `stoplist token generate-key`"
            )
        if len(set(secret)) < 8:
            raise ValueError(f"key {kid!r}: the secret looks like a placeholder")
        keys.append(SigningKey(kid, secret))
    if not keys:
        raise ValueError("no keys given")
    return keys


def decode_secret(encoded: str) -> bytes | None:
    if not encoded or not re.fullmatch(r"[A-Za-z0-9+/_-]+=*", encoded):
        return None
    padded = encoded.rstrip("=")
    padded += "=" * (-len(padded) % 4)
    try:
        return base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
    except (binascii.Error, ValueError):
        return None


def new_key_secret() -> str:
    """A fresh 256-bit secret, base64url without padding."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
