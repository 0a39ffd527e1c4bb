"""What a signed reference is: its purposes, the reasons one is refused, the key and the verified
content, and the fixed sizes of both encodings (see ``app.signing``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

KEY_ID_RE: Final = re.compile(r"^[a-z0-9]{1,8}$")
PREFIX_RE: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,15}$")
MIN_SECRET_BYTES: Final = 32
ADDRESS_MAC_BYTES: Final = 5  # 8 base32 characters, 40 bits: an online guess per message
TOKEN_MAC_BYTES: Final = 16
TOKEN_VERSION: Final = 1
CLOCK_SKEW_S: Final = 300
MAX_TS: Final = 2**32 - 1
RFC5321_LOCAL_MAX: Final = 64


class Purpose(StrEnum):
    BOUNCE = "bounce"  # the envelope sender: bounces come back to it
    REF = "ref"  # X-Stoplist-Ref: complaints and bounces quote it
    UNSUBSCRIBE = "unsubscribe"  # List-Unsubscribe (URL and mailto)


class RejectReason(StrEnum):
    MALFORMED = "malformed"  # not one of our references at all
    UNKNOWN_KEY = "unknown_key"  # names a key id we do not have (retired, or made up)
    FORGED = "forged"  # the MAC does not match: made up, or altered after signing
    TAMPERED = "tampered"  # the MAC matches but the content is impossible (future, bad fields)
    EXPIRED = "expired"  # genuine, but older than the maximum age for its use


class TokenError(ValueError):
    """A reference that does not verify; ``reason`` is one of :class:`RejectReason`."""

    def __init__(
        self, reason: RejectReason, detail: str, *, expired_ref: VerifiedRef | None = None
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        # Only for ``expired``: the genuine but old content, for recording (never for applying).
        self.expired_ref = expired_ref


@dataclass(frozen=True, slots=True)
class SigningKey:
    key_id: str
    secret: bytes

    def __repr__(self) -> str:  # never print the secret
        return f"SigningKey(key_id={self.key_id!r}, secret=<{len(self.secret)} bytes>)"


@dataclass(frozen=True, slots=True)
class VerifiedRef:
    recipient: str
    stream: str | None
    issued_at: datetime
    key_id: str
    purpose: str
