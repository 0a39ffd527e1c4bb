"""Signed references: who a message was sent to, in a form that comes back with its bounce,
complaint or unsubscribe and that nobody without our key can make up.

Two encodings of the same claim (recipient, stream, issue time, key id), each HMAC-SHA256-signed:

* an **address form**, for the SMTP envelope sender (VERP in the spirit of BATV) and for the
  ``mailto:`` unsubscribe address::

      b+k2-smq3cg-x4k2p7qa-newsletter=carol=example.net@bounces.example.net
      ^ ^  ^      ^        ^          ^
      | |  |      |        |          recipient, "@" written "=" (RFC 5321 atext only)
      | |  |      |        stream ("" when none); never contains "=", so the first "=" ends it
      | |  |      40-bit MAC, lower-case base32: some MTAs lower-case local parts in DSNs
      | |  issue time, Unix seconds in base 36
      | key id
      prefix (configurable)

  Everything in it is lower case, so it survives MTAs that fold the case of a local part. RFC 5321
  §4.5.3.1.1 limits a local part to 64 octets; the fixed part is 23 octets plus the stream, so
  long recipients exceed it. Common MTAs accept longer local parts; see docs/signed-return-paths.md.

* a **compact token** (base64url, no padding) for the ``X-Stoplist-Ref`` header and the one-click
  unsubscribe URL: version, key id, issue time, stream and recipient, then a 128-bit MAC.

The purpose (``bounce``, ``ref``, ``unsubscribe``) and the form are part of the MAC input, so a
token minted for one use is refused for another. Verification uses a constant-time comparison and
reports why it failed (:class:`RejectReason`).

Standard library (plus the address normaliser) only, synchronous: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final
from urllib.parse import quote

from app.addresses import InvalidAddress, normalise_address
from app.streams import STREAM_RE

__all__ = [
    "RejectReason",
    "Signer",
    "SigningKey",
    "TokenError",
    "VerifiedRef",
    "has_signed_address_form",
    "parse_signing_keys",
]

KEY_ID_RE: Final = re.compile(r"^[a-z0-9]{1,8}$")
PREFIX_RE: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,15}$")
MIN_SECRET_BYTES: Final = 32
ADDRESS_MAC_BYTES: Final = 5  # 8 base32 characters, 40 bits: an online guess per message
TOKEN_MAC_BYTES: Final = 16
TOKEN_VERSION: Final = 1
CLOCK_SKEW_S: Final = 300
MAX_TS: Final = 2**32 - 1
RFC5321_LOCAL_MAX: Final = 64

# Local parts we can carry inside another local part (lower-case dot-atom).
_LOCAL_RE: Final = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~.-]+$")
_DOMAIN_RE: Final = re.compile(r"^[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?$")
_B36: Final = "0123456789abcdefghijklmnopqrstuvwxyz"
_ADDRESS_FORM: Final = re.compile(
    r"^(?P<prefix>[a-z0-9][a-z0-9._-]{0,15})\+"
    r"(?P<kid>[a-z0-9]{1,8})-(?P<ts>[0-9a-z]{1,7})-(?P<mac>[a-z2-7]{8})-"
    r"(?P<stream>[a-z0-9_.-]{0,64})=(?P<local>.+)=(?P<domain>[^=]+)$"
)
_TOKEN_CHARS: Final = re.compile(r"^[A-Za-z0-9_-]{16,700}$")


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


# ------------------------------------------------------------------------------------ keys


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
        secret = _decode_secret(encoded.strip())
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


def _decode_secret(encoded: str) -> bytes | None:
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
    import secrets

    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


# ------------------------------------------------------------------------------ primitives


def _mac(
    secret: bytes, form: str, purpose: str, kid: str, ts: int, stream: str, rcpt: str
) -> bytes:
    # NUL never occurs in a validated field, so the encoding is unambiguous.
    message = "\0".join(("stoplist-ref-1", form, purpose, kid, str(ts), stream, rcpt))
    return hmac.new(secret, message.encode("utf-8"), hashlib.sha256).digest()


def _b36(n: int) -> str:
    if n == 0:
        return "0"
    digits = []
    while n:
        n, r = divmod(n, 36)
        digits.append(_B36[r])
    return "".join(reversed(digits))


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode().lower().rstrip("=")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(raw) != text:
        # Unused low bits of the last character differ: the same bytes, altered text.
        raise ValueError("non-canonical base64")
    return raw


def _check_recipient(recipient: str) -> str:
    try:
        norm = normalise_address(recipient)
    except InvalidAddress as exc:
        raise ValueError(f"recipient {recipient!r}: {exc.why}") from None
    return norm


def _check_stream(stream: str | None) -> str:
    if stream is None or stream == "":
        return ""
    if not STREAM_RE.match(stream):
        raise ValueError(f"stream {stream!r}: 1-64 of a-z 0-9 _ . - starting with a letter/digit")
    return stream


def has_signed_address_form(local_part: str, prefixes: Collection[str]) -> bool:
    """Whether ``local_part`` has the shape of our address form under one of ``prefixes``.

    Shape only, no key needed: the SMTP sink uses it to tell the ``%`` or ``!`` of a recipient's
    own local part, carried inside a return path (``b+k1-...-=jo%hn=example.com``), from a
    sender-specified route (``victim%elsewhere.example@...``, RFC 5321 §3.6.1)."""
    m = _ADDRESS_FORM.match(local_part.lower())
    return m is not None and m["prefix"] in prefixes


def _split_address(address: str) -> tuple[str, str]:
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    local, at, domain = text.rpartition("@")
    if not at or not local:
        raise TokenError(RejectReason.MALFORMED, "not an address")
    return local, domain


# ---------------------------------------------------------------------------------- signer


class Signer:
    """Mints and verifies references with the configured keys (the first one signs)."""

    def __init__(
        self,
        keys: Sequence[SigningKey],
        *,
        return_path_domain: str | None = None,
        return_path_prefix: str = "b",
        unsubscribe_domain: str | None = None,
        unsubscribe_prefix: str = "unsubscribe",
        unsubscribe_base_url: str | None = None,
        bounce_max_age: timedelta = timedelta(days=30),
        unsubscribe_max_age: timedelta = timedelta(days=365),
    ) -> None:
        if not keys:
            raise ValueError("a signer needs at least one key")
        for prefix in (return_path_prefix, unsubscribe_prefix):
            if not PREFIX_RE.match(prefix):
                raise ValueError(f"prefix {prefix!r}: 1-16 of a-z 0-9 . _ -")
        self.keys = {k.key_id: k for k in keys}
        self.current = keys[0]
        self.return_path_domain = return_path_domain
        self.return_path_prefix = return_path_prefix
        self.unsubscribe_domain = unsubscribe_domain
        self.unsubscribe_prefix = unsubscribe_prefix
        self.unsubscribe_base_url = (
            unsubscribe_base_url.rstrip("/") if unsubscribe_base_url else None
        )
        self.bounce_max_age = bounce_max_age
        self.unsubscribe_max_age = unsubscribe_max_age

    # ------------------------------------------------------------------ minting

    def return_path(
        self, recipient: str, stream: str | None = None, *, now: float | None = None
    ) -> str:
        """The envelope sender for one message to ``recipient`` (bounces come back to it)."""
        if not self.return_path_domain:
            raise ValueError("no return-path domain configured (STOPLIST_RETURN_PATH_DOMAIN)")
        local = self._address_local(self.return_path_prefix, Purpose.BOUNCE, recipient, stream, now)
        return f"{local}@{self.return_path_domain}"

    def unsubscribe_mailto_address(
        self, recipient: str, stream: str | None = None, *, now: float | None = None
    ) -> str:
        """The ``mailto:`` unsubscribe address (address form: survives case folding)."""
        if not self.unsubscribe_domain:
            raise ValueError("no unsubscribe domain configured (STOPLIST_UNSUBSCRIBE_DOMAIN)")
        local = self._address_local(
            self.unsubscribe_prefix, Purpose.UNSUBSCRIBE, recipient, stream, now
        )
        return f"{local}@{self.unsubscribe_domain}"

    def ref_token(
        self, recipient: str, stream: str | None = None, *, now: float | None = None
    ) -> str:
        """The ``X-Stoplist-Ref`` header value."""
        return self._token(Purpose.REF, recipient, stream, now)

    def unsubscribe_token(
        self, recipient: str, stream: str | None = None, *, now: float | None = None
    ) -> str:
        """The token of ``/v1/unsubscribe/<token>``."""
        return self._token(Purpose.UNSUBSCRIBE, recipient, stream, now)

    def unsubscribe_url(
        self, recipient: str, stream: str | None = None, *, now: float | None = None
    ) -> str:
        if not self.unsubscribe_base_url:
            raise ValueError("no public base URL configured (STOPLIST_PUBLIC_BASE_URL)")
        token = self.unsubscribe_token(recipient, stream, now=now)
        return f"{self.unsubscribe_base_url}/v1/unsubscribe/{quote(token, safe='')}"

    def headers(
        self, recipient: str, stream: str | None = None, *, now: float | None = None
    ) -> dict[str, str]:
        """Everything a sender puts on one message: envelope sender and header values.

        Keys absent from the answer need a setting that is not configured.
        """
        when = time.time() if now is None else now
        out: dict[str, str] = {"x_stoplist_ref": self.ref_token(recipient, stream, now=when)}
        if self.return_path_domain:
            out["return_path"] = self.return_path(recipient, stream, now=when)
        unsub: list[str] = []
        if self.unsubscribe_base_url:
            out["unsubscribe_url"] = self.unsubscribe_url(recipient, stream, now=when)
            unsub.append(f"<{out['unsubscribe_url']}>")
        if self.unsubscribe_domain:
            out["unsubscribe_mailto"] = self.unsubscribe_mailto_address(recipient, stream, now=when)
            unsub.append(f"<mailto:{out['unsubscribe_mailto']}?subject=unsubscribe>")
        if unsub:
            out["list_unsubscribe"] = ", ".join(unsub)
        if self.unsubscribe_base_url:
            out["list_unsubscribe_post"] = "List-Unsubscribe=One-Click"  # RFC 8058 §3
        return out

    def _address_local(
        self, prefix: str, purpose: Purpose, recipient: str, stream: str | None, now: float | None
    ) -> str:
        rcpt = _check_recipient(recipient)
        local, _, domain = rcpt.rpartition("@")
        if not _LOCAL_RE.match(local) or not _DOMAIN_RE.match(domain):
            raise ValueError(
                f"recipient {rcpt!r} cannot be carried in an address (quoted or non-ASCII "
                "local part): use the X-Stoplist-Ref header instead"
            )
        st = _check_stream(stream)
        ts = self._now(now)
        key = self.current
        mac = _mac(key.secret, "a", purpose, key.key_id, ts, st, rcpt)[:ADDRESS_MAC_BYTES]
        return f"{prefix}+{key.key_id}-{_b36(ts)}-{_b32(mac)}-{st}={local}={domain}"

    def _token(
        self, purpose: Purpose, recipient: str, stream: str | None, now: float | None
    ) -> str:
        rcpt = _check_recipient(recipient)
        st = _check_stream(stream)
        ts = self._now(now)
        key = self.current
        kid = key.key_id.encode()
        body = (
            bytes([TOKEN_VERSION, len(kid)])
            + kid
            + ts.to_bytes(4, "big")
            + bytes([len(st)])
            + st.encode()
            + rcpt.encode("utf-8")
        )
        mac = _mac(key.secret, "t", purpose, key.key_id, ts, st, rcpt)[:TOKEN_MAC_BYTES]
        return _b64(body + mac)

    @staticmethod
    def _now(now: float | None) -> int:
        ts = int(time.time() if now is None else now)
        if not 0 <= ts <= MAX_TS:
            raise ValueError("issue time out of range")
        return ts

    # ---------------------------------------------------------------- verifying

    def is_return_path(self, address: str) -> bool:
        """Whether ``address`` claims to be one of our signed return paths (not whether it is)."""
        return self._has_prefix(address, self.return_path_prefix)

    def is_unsubscribe_address(self, address: str) -> bool:
        return self._has_prefix(address, self.unsubscribe_prefix)

    @staticmethod
    def _has_prefix(address: str, prefix: str) -> bool:
        text = address.strip().lstrip("<").lower()
        return text.startswith(prefix + "+")

    def verify_return_path(
        self, address: str, *, max_age: timedelta | None = None, now: float | None = None
    ) -> VerifiedRef:
        return self._verify_address(
            address,
            self.return_path_prefix,
            Purpose.BOUNCE,
            self.bounce_max_age if max_age is None else max_age,
            now,
        )

    def verify_unsubscribe_address(
        self, address: str, *, max_age: timedelta | None = None, now: float | None = None
    ) -> VerifiedRef:
        return self._verify_address(
            address,
            self.unsubscribe_prefix,
            Purpose.UNSUBSCRIBE,
            self.unsubscribe_max_age if max_age is None else max_age,
            now,
        )

    def verify_ref_token(
        self, token: str, *, max_age: timedelta | None = None, now: float | None = None
    ) -> VerifiedRef:
        return self._verify_token(
            token, Purpose.REF, self.bounce_max_age if max_age is None else max_age, now
        )

    def verify_unsubscribe_token(
        self, token: str, *, max_age: timedelta | None = None, now: float | None = None
    ) -> VerifiedRef:
        return self._verify_token(
            token,
            Purpose.UNSUBSCRIBE,
            self.unsubscribe_max_age if max_age is None else max_age,
            now,
        )

    def _verify_address(
        self, address: str, prefix: str, purpose: Purpose, max_age: timedelta, now: float | None
    ) -> VerifiedRef:
        if not isinstance(address, str) or len(address) > 1000:
            raise TokenError(RejectReason.MALFORMED, "not an address")
        local, _ = _split_address(address)
        # Everything we put in is lower case; an MTA may have folded it either way.
        m = _ADDRESS_FORM.match(local.lower())
        if m is None or m["prefix"] != prefix:
            raise TokenError(RejectReason.MALFORMED, f"not a {prefix}+... signed address")
        kid, ts_text, stream = m["kid"], m["ts"], m["stream"]
        ts = int(ts_text, 36)
        if _b36(ts) != ts_text or ts > MAX_TS:
            raise TokenError(RejectReason.MALFORMED, "bad issue time")
        if stream and not STREAM_RE.match(stream):
            raise TokenError(RejectReason.MALFORMED, "bad stream")
        rcpt = f"{m['local']}@{m['domain']}"
        key = self.keys.get(kid)
        if key is None:
            raise TokenError(RejectReason.UNKNOWN_KEY, f"key id {kid!r} is not configured")
        expected = _b32(_mac(key.secret, "a", purpose, kid, ts, stream, rcpt)[:ADDRESS_MAC_BYTES])
        if not hmac.compare_digest(expected, m["mac"]):
            raise TokenError(RejectReason.FORGED, "signature does not match")
        return self._finish(rcpt, stream, ts, kid, purpose, max_age, now)

    def _verify_token(
        self, token: str, purpose: Purpose, max_age: timedelta, now: float | None
    ) -> VerifiedRef:
        if not isinstance(token, str) or not _TOKEN_CHARS.match(token.strip()):
            raise TokenError(RejectReason.MALFORMED, "not a token")
        try:
            raw = _unb64(token.strip())
        except (binascii.Error, ValueError):
            raise TokenError(RejectReason.MALFORMED, "not base64url") from None
        if len(raw) < 2 + 1 + 4 + 1 + 3 + TOKEN_MAC_BYTES or raw[0] != TOKEN_VERSION:
            raise TokenError(RejectReason.MALFORMED, "unknown token version or too short")
        body, mac = raw[:-TOKEN_MAC_BYTES], raw[-TOKEN_MAC_BYTES:]
        try:
            klen = body[1]
            kid = body[2 : 2 + klen].decode("ascii")
            pos = 2 + klen
            ts = int.from_bytes(body[pos : pos + 4], "big")
            slen = body[pos + 4]
            stream = body[pos + 5 : pos + 5 + slen].decode("ascii")
            rcpt = body[pos + 5 + slen :].decode("utf-8")
        except (IndexError, UnicodeDecodeError):
            raise TokenError(RejectReason.MALFORMED, "bad token layout") from None
        if (
            not KEY_ID_RE.match(kid)
            or len(stream) != slen
            or (stream and not STREAM_RE.match(stream))
            or not rcpt
            or "\0" in rcpt
        ):
            raise TokenError(RejectReason.MALFORMED, "bad token fields")
        key = self.keys.get(kid)
        if key is None:
            raise TokenError(RejectReason.UNKNOWN_KEY, f"key id {kid!r} is not configured")
        expected = _mac(key.secret, "t", purpose, kid, ts, stream, rcpt)[:TOKEN_MAC_BYTES]
        if not hmac.compare_digest(expected, mac):
            raise TokenError(RejectReason.FORGED, "signature does not match")
        return self._finish(rcpt, stream, ts, kid, purpose, max_age, now)

    @staticmethod
    def _finish(
        rcpt: str,
        stream: str,
        ts: int,
        kid: str,
        purpose: Purpose,
        max_age: timedelta,
        now: float | None,
    ) -> VerifiedRef:
        # The MAC matched: what follows can only fail with a leaked key or a broken clock.
        try:
            norm = normalise_address(rcpt)
        except InvalidAddress:
            raise TokenError(RejectReason.TAMPERED, "signed recipient is not an address") from None
        if norm != rcpt:
            raise TokenError(RejectReason.TAMPERED, "signed recipient is not normalised")
        current = time.time() if now is None else now
        if ts > current + CLOCK_SKEW_S:
            raise TokenError(RejectReason.TAMPERED, "issued in the future")
        ref = VerifiedRef(
            recipient=rcpt,
            stream=stream or None,
            issued_at=datetime.fromtimestamp(ts, UTC),
            key_id=kid,
            purpose=str(purpose),
        )
        if current - ts > max_age.total_seconds():
            raise TokenError(
                RejectReason.EXPIRED,
                f"issued more than {max_age.days} days ago",
                expired_ref=ref,
            )
        return ref
