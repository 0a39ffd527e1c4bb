"""Checks that a webhook request comes from the sender it names. Pure: no network, no clock reads
that the caller cannot override; a certificate is fetched by a callable the caller gives.

- Amazon SNS (SNS Developer Guide, "Verifying the signatures of Amazon SNS messages"): the
  string to sign is ``Key\\nValue\\n`` for a fixed list of keys per message type, in byte order
  (Notification: Message, MessageId, Subject if present, Timestamp, TopicArn, Type; the
  confirmations: Message, MessageId, SubscribeURL, Timestamp, Token, TopicArn, Type), signed
  RSA PKCS#1 v1.5 with SHA1 (``SignatureVersion`` 1) or SHA256 (2). ``SigningCertURL`` must be
  https on ``sns.<region>.amazonaws.com`` (``.com.cn`` in China) and end in ``.pem``: anything
  else is refused before fetching, so a forged message cannot make us fetch a key of its choosing.
- SendGrid signed Event Webhook (docs, "Getting started with the Event Webhook security
  features"): ECDSA P-256 with SHA256 over ``timestamp + raw body``; the signature (DER, base64)
  in ``X-Twilio-Email-Event-Webhook-Signature``, the timestamp in ``...-Timestamp``, the public
  key given as base64 DER (SubjectPublicKeyInfo).
- Mailgun (docs, "Securing webhooks"): hex HMAC-SHA256 of ``timestamp + token`` with the webhook
  signing key; a timestamp outside the replay window or a token seen before is refused.
- Postmark: HTTP Basic credentials in the webhook URL, compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

__all__ = [
    "CertificateCache",
    "ReplayGuard",
    "SignatureError",
    "check_basic_auth",
    "check_sns_certificate_url",
    "check_sns_subscribe_url",
    "load_sendgrid_public_key",
    "sns_string_to_sign",
    "verify_mailgun",
    "verify_sendgrid",
    "verify_sns",
]

_SNS_HOST: Final = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?$")
# Both subscription confirmations sign the same keys, in this (byte-sorted) order.
_SNS_SUBSCRIPTION_KEYS: Final = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
_SNS_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": _SNS_SUBSCRIPTION_KEYS,
    "UnsubscribeConfirmation": _SNS_SUBSCRIPTION_KEYS,
}
# Mailgun's replay window: their docs suggest refusing stale timestamps; five minutes either way
# allows for clock skew without keeping tokens long.
MAILGUN_MAX_AGE: Final = 300.0


class SignatureError(ValueError):
    """The request is not signed by the sender it names (answer 401, record nothing)."""


# --- Amazon SNS -----------------------------------------------------------------------------


def check_sns_certificate_url(url: str) -> None:
    """Refuse a SigningCertURL that is not an SNS certificate (before anything fetches it)."""
    parts = urlsplit(url)
    if (
        parts.scheme != "https"
        or parts.port not in (None, 443)
        or parts.username is not None
        or not _SNS_HOST.match(parts.hostname or "")
        or not parts.path.endswith(".pem")
        or parts.query
        or parts.fragment
    ):
        raise SignatureError(f"SigningCertURL is not an SNS certificate URL: {url[:200]!r}")


def check_sns_subscribe_url(url: str) -> None:
    """Refuse a SubscribeURL that is not an SNS endpoint, before the service fetches it.

    Confirming a subscription is a GET of this URL: a forged confirmation must not make the
    service fetch an address of its choosing (the signature is checked first; this is the second
    lock).
    """
    parts = urlsplit(url)
    if (
        parts.scheme != "https"
        or parts.port not in (None, 443)
        or parts.username is not None
        or not _SNS_HOST.match(parts.hostname or "")
        or "Action=ConfirmSubscription" not in parts.query
    ):
        raise SignatureError(f"SubscribeURL is not an SNS confirmation URL: {url[:200]!r}")


def sns_string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The bytes SNS signed for this message (its type decides which keys)."""
    keys = _SNS_KEYS.get(str(message.get("Type")))
    if keys is None:
        raise SignatureError(f"unknown SNS message type {message.get('Type')!r}")
    out: list[str] = []
    for key in keys:
        value = message.get(key)
        if value is None:
            if key == "Subject":
                continue
            raise SignatureError(f"SNS message without {key}")
        out.append(f"{key}\n{value}\n")
    return "".join(out).encode()


class CertificateCache:
    """Wraps a fetcher (``url -> PEM bytes``) and keeps the parsed certificates it returned.

    SNS signs every message with the same few certificates, so one fetch per URL is enough; the
    cache is bounded so that many URLs (all on SNS hosts) cannot grow it without end.
    """

    def __init__(self, fetch: Callable[[str], bytes], max_entries: int = 32) -> None:
        self._fetch = fetch
        self._max = max_entries
        self._certs: OrderedDict[str, x509.Certificate] = OrderedDict()

    def __call__(self, url: str) -> x509.Certificate:
        cert = self._certs.get(url)
        if cert is not None:
            self._certs.move_to_end(url)
            return cert
        check_sns_certificate_url(url)
        try:
            cert = x509.load_pem_x509_certificate(self._fetch(url))
        except ValueError as exc:
            raise SignatureError(f"unreadable certificate at {url[:200]!r}") from exc
        self._certs[url] = cert
        if len(self._certs) > self._max:
            self._certs.popitem(last=False)
        return cert


def verify_sns(
    message: Mapping[str, Any],
    certificates: Callable[[str], x509.Certificate],
    *,
    now: datetime | None = None,
) -> None:
    """Raise ``SignatureError`` unless ``message`` (the parsed SNS JSON) is signed by SNS.

    ``certificates`` maps a SigningCertURL to its certificate: a ``CertificateCache`` around the
    caller's HTTP fetch. The URL is checked here first whatever the callable does.
    """
    version = str(message.get("SignatureVersion"))
    algorithm: hashes.HashAlgorithm
    if version == "1":
        algorithm = hashes.SHA1()  # noqa: S303 - SNS SignatureVersion 1 is SHA1withRSA
    elif version == "2":
        algorithm = hashes.SHA256()
    else:
        raise SignatureError(f"unsupported SignatureVersion {version!r}")
    url = message.get("SigningCertURL")
    if not isinstance(url, str):
        raise SignatureError("no SigningCertURL")
    check_sns_certificate_url(url)
    signature = _b64(message.get("Signature"), "Signature")
    data = sns_string_to_sign(message)
    cert = certificates(url)
    moment = now or datetime.now(UTC)
    if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
        raise SignatureError("SNS signing certificate is not valid now")
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureError("SNS signing certificate is not an RSA key")
    try:
        key.verify(signature, data, padding.PKCS1v15(), algorithm)
    except InvalidSignature as exc:
        raise SignatureError("SNS signature does not match") from exc


# --- SendGrid -------------------------------------------------------------------------------


def load_sendgrid_public_key(value: str) -> ec.EllipticCurvePublicKey:
    """The verification key from SendGrid's settings page (base64 DER, no PEM armour)."""
    try:
        key = serialization.load_der_public_key(base64.b64decode(value.strip(), validate=True))
    except (ValueError, binascii.Error) as exc:
        raise SignatureError("not a base64 DER public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SignatureError("SendGrid's key must be an elliptic-curve key")
    return key


def verify_sendgrid(
    public_key: ec.EllipticCurvePublicKey,
    payload: bytes,
    signature: str | None,
    timestamp: str | None,
    *,
    max_age: float | None = None,
    now: float | None = None,
) -> None:
    """Raise ``SignatureError`` unless ``signature`` signs ``timestamp + payload`` (raw body).

    ``max_age`` (seconds), when given, also refuses an old or future timestamp.
    """
    if not timestamp:
        raise SignatureError("no signature timestamp")
    raw = _b64(signature, "signature")
    if max_age is not None:
        _fresh(timestamp, max_age, now)
    try:
        public_key.verify(raw, timestamp.encode() + payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise SignatureError("SendGrid signature does not match") from exc


# --- Mailgun --------------------------------------------------------------------------------


class ReplayGuard:
    """Tokens seen within the replay window (in memory, bounded; a service may keep its own)."""

    def __init__(self, window: float = MAILGUN_MAX_AGE, max_entries: int = 100_000) -> None:
        self.window = window
        self._max = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first_time(self, token: str, now: float) -> bool:
        """True the first time ``token`` is shown (and remembers it); False on a replay."""
        while self._seen:
            oldest, when = next(iter(self._seen.items()))
            if when >= now - 2 * self.window and len(self._seen) < self._max:
                break
            del self._seen[oldest]
        if token in self._seen:
            return False
        self._seen[token] = now
        return True


def verify_mailgun(
    signing_key: str,
    timestamp: str | None,
    token: str | None,
    signature: str | None,
    *,
    replay: Callable[[str, float], bool] | None = None,
    max_age: float = MAILGUN_MAX_AGE,
    now: float | None = None,
) -> None:
    """Raise ``SignatureError`` unless the ``signature`` object of a Mailgun webhook is good.

    ``replay(token, now)`` returns False for a token seen before (``ReplayGuard.first_time``);
    it is asked only after the HMAC matched, so forged requests cannot fill it.
    """
    if not (timestamp and token and signature):
        raise SignatureError("incomplete Mailgun signature")
    moment = _fresh(timestamp, max_age, now)
    expected = hmac.new(
        signing_key.encode(), (timestamp + token).encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        raise SignatureError("Mailgun signature does not match")
    if replay is not None and not replay(token, moment):
        raise SignatureError("Mailgun token seen before (replay)")


# --- Postmark -------------------------------------------------------------------------------


def check_basic_auth(authorization: str | None, username: str, password: str) -> bool:
    """Whether an ``Authorization`` header carries these Basic credentials (constant time)."""
    if not authorization or not password:
        return False
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(value.strip(), validate=True)
    except (ValueError, binascii.Error):
        return False
    expected = f"{username}:{password}".encode()
    return hmac.compare_digest(given, expected)


# --- shared ---------------------------------------------------------------------------------


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise SignatureError(f"no {what}")
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise SignatureError(f"{what} is not base64") from exc


def _fresh(timestamp: str, max_age: float, now: float | None) -> float:
    try:
        stamp = float(timestamp)
    except ValueError as exc:
        raise SignatureError("timestamp is not a number") from exc
    moment = time.time() if now is None else now
    if abs(moment - stamp) > max_age:
        raise SignatureError("timestamp outside the replay window")
    return moment
