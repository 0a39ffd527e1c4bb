"""``Signer``: mints and verifies return paths, unsubscribe addresses and tokens (``app.signing``)."""

from __future__ import annotations

import binascii
import hmac
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from app.addresses import InvalidAddress, normalise_address
from app.signing.encoding import (
    ADDRESS_FORM,
    DOMAIN_RE,
    LOCAL_RE,
    TOKEN_CHARS,
    b32,
    b36,
    b64,
    check_recipient,
    check_stream,
    sign,
    split_address,
    unb64,
)
from app.signing.model import (
    ADDRESS_MAC_BYTES,
    CLOCK_SKEW_S,
    KEY_ID_RE,
    MAX_TS,
    PREFIX_RE,
    TOKEN_MAC_BYTES,
    TOKEN_VERSION,
    Purpose,
    RejectReason,
    SigningKey,
    TokenError,
    VerifiedRef,
)
from app.streams import STREAM_RE


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
        rcpt = check_recipient(recipient)
        local, _, domain = rcpt.rpartition("@")
        if not LOCAL_RE.match(local) or not DOMAIN_RE.match(domain):
            raise ValueError(
                f"recipient {rcpt!r} cannot be carried in an address (quoted or non-ASCII "
                "local part): use the X-Stoplist-Ref header instead"
            )
        st = check_stream(stream)
        ts = self._now(now)
        key = self.current
        mac = sign(key.secret, "a", purpose, key.key_id, ts, st, rcpt)[:ADDRESS_MAC_BYTES]
        return f"{prefix}+{key.key_id}-{b36(ts)}-{b32(mac)}-{st}={local}={domain}"

    def _token(
        self, purpose: Purpose, recipient: str, stream: str | None, now: float | None
    ) -> str:
        rcpt = check_recipient(recipient)
        st = check_stream(stream)
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
        mac = sign(key.secret, "t", purpose, key.key_id, ts, st, rcpt)[:TOKEN_MAC_BYTES]
        return b64(body + mac)

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
        local, _ = split_address(address)
        # Everything we put in is lower case; an MTA may have folded it either way.
        m = ADDRESS_FORM.match(local.lower())
        if m is None or m["prefix"] != prefix:
            raise TokenError(RejectReason.MALFORMED, f"not a {prefix}+... signed address")
        kid, ts_text, stream = m["kid"], m["ts"], m["stream"]
        ts = int(ts_text, 36)
        if b36(ts) != ts_text or ts > MAX_TS:
            raise TokenError(RejectReason.MALFORMED, "bad issue time")
        if stream and not STREAM_RE.match(stream):
            raise TokenError(RejectReason.MALFORMED, "bad stream")
        rcpt = f"{m['local']}@{m['domain']}"
        key = self.keys.get(kid)
        if key is None:
            raise TokenError(RejectReason.UNKNOWN_KEY, f"key id {kid!r} is not configured")
        expected = b32(sign(key.secret, "a", purpose, kid, ts, stream, rcpt)[:ADDRESS_MAC_BYTES])
        if not hmac.compare_digest(expected, m["mac"]):
            raise TokenError(RejectReason.FORGED, "signature does not match")
        return self._finish(rcpt, stream, ts, kid, purpose, max_age, now)

    def _verify_token(
        self, token: str, purpose: Purpose, max_age: timedelta, now: float | None
    ) -> VerifiedRef:
        if not isinstance(token, str) or not TOKEN_CHARS.match(token.strip()):
            raise TokenError(RejectReason.MALFORMED, "not a token")
        try:
            raw = unb64(token.strip())
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
        expected = sign(key.secret, "t", purpose, kid, ts, stream, rcpt)[:TOKEN_MAC_BYTES]
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
