"""Standard Webhooks signatures and the signing secrets at rest.

A secret is ``whsec_`` + base64 of 24 random bytes; the HMAC key is those bytes. The signature
header is ``v1,<base64 HMAC-SHA256(key, f"{id}.{timestamp}.{body}")>``, one per valid secret,
separated by spaces (two during a rotation), as the ``standardwebhooks`` libraries verify.

Secrets must stay usable for signing, so they cannot be stored as hashes: with
``STOPLIST_WEBHOOK_SECRET_KEY`` they are encrypted with AES-256-GCM (``aesgcm:`` + base64 of
nonce + ciphertext, the subscription id as associated data, so a secret copied to another row
does not decrypt); without it they are stored as ``plain:`` text, and whoever reads the database
can sign (docs/webhooks.md says so).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "whsec_"


class SecretError(ValueError):
    """A stored secret that cannot be read (wrong or missing encryption key)."""


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def secret_key_bytes(secret: str) -> bytes:
    body = secret[len(PREFIX) :] if secret.startswith(PREFIX) else secret
    return base64.b64decode(body)


def sign(secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: one ``v1,`` signature per secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    parts = []
    for secret in secrets_:
        mac = hmac.new(secret_key_bytes(secret), signed, hashlib.sha256).digest()
        parts.append("v1," + base64.b64encode(mac).decode())
    return " ".join(parts)


class SecretBox:
    """Seals and opens stored secrets (AES-256-GCM when a key is configured)."""

    def __init__(self, key_b64: str | None) -> None:
        self._aead = AESGCM(base64.b64decode(key_b64)) if key_b64 else None

    def seal(self, secret: str, subscription_id: int) -> str:
        if self._aead is None:
            return "plain:" + secret
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), str(subscription_id).encode())
        return "aesgcm:" + base64.b64encode(nonce + sealed).decode()

    def open(self, stored: str, subscription_id: int) -> str:
        kind, _, body = stored.partition(":")
        if kind == "plain":
            return body
        if kind != "aesgcm" or self._aead is None:
            raise SecretError("the secret is encrypted: STOPLIST_WEBHOOK_SECRET_KEY is needed")
        raw = base64.b64decode(body)
        try:
            plain = self._aead.decrypt(raw[:12], raw[12:], str(subscription_id).encode())
        except Exception:
            raise SecretError(
                "the secret does not decrypt with STOPLIST_WEBHOOK_SECRET_KEY"
            ) from None
        return plain.decode()
