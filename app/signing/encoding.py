"""The pieces both encodings are built from: the MAC, base 32/36/64 text, recipient and stream
checks, and the shape of the address form (``app.signing``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Collection
from typing import Final

from app.addresses import InvalidAddress, normalise_address
from app.signing.model import RejectReason, TokenError
from app.streams import STREAM_RE

# Local parts we can carry inside another local part (lower-case dot-atom).
LOCAL_RE: Final = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~.-]+$")
DOMAIN_RE: Final = re.compile(r"^[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?$")
B36: Final = "0123456789abcdefghijklmnopqrstuvwxyz"
ADDRESS_FORM: Final = re.compile(
    r"^(?P<prefix>[a-z0-9][a-z0-9._-]{0,15})\+"
    r"(?P<kid>[a-z0-9]{1,8})-(?P<ts>[0-9a-z]{1,7})-(?P<mac>[a-z2-7]{8})-"
    r"(?P<stream>[a-z0-9_.-]{0,64})=(?P<local>.+)=(?P<domain>[^=]+)$"
)
TOKEN_CHARS: Final = re.compile(r"^[A-Za-z0-9_-]{16,700}$")


def sign(
    secret: bytes, form: str, purpose: str, kid: str, ts: int, stream: str, rcpt: str
) -> bytes:
    # NUL never occurs in a validated field, so the encoding is unambiguous.
    message = "\0".join(("stoplist-ref-1", form, purpose, kid, str(ts), stream, rcpt))
    return hmac.new(secret, message.encode("utf-8"), hashlib.sha256).digest()


def b36(n: int) -> str:
    if n == 0:
        return "0"
    digits = []
    while n:
        n, r = divmod(n, 36)
        digits.append(B36[r])
    return "".join(reversed(digits))


def b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode().lower().rstrip("=")


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64(raw) != text:
        # Unused low bits of the last character differ: the same bytes, altered text.
        raise ValueError("non-canonical base64")
    return raw


def check_recipient(recipient: str) -> str:
    try:
        norm = normalise_address(recipient)
    except InvalidAddress as exc:
        raise ValueError(f"recipient {recipient!r}: {exc.why}") from None
    return norm


def check_stream(stream: str | None) -> str:
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
    m = ADDRESS_FORM.match(local_part.lower())
    return m is not None and m["prefix"] in prefixes


def split_address(address: str) -> tuple[str, str]:
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    local, at, domain = text.rpartition("@")
    if not at or not local:
        raise TokenError(RejectReason.MALFORMED, "not an address")
    return local, domain
