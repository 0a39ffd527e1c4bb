"""Webhook authentication with keys and certificates made here: good, tampered and wrong ones."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from events.signatures import (
    CertificateCache,
    ReplayGuard,
    SignatureError,
    check_basic_auth,
    check_sns_certificate_url,
    check_sns_subscribe_url,
    load_sendgrid_public_key,
    sns_string_to_sign,
    verify_mailgun,
    verify_sendgrid,
    verify_sns,
)

CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000.pem"
NOW = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def _certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def sns_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _signed(key: rsa.RSAPrivateKey, message: dict[str, Any], version: str) -> dict[str, Any]:
    message = {**message, "SignatureVersion": version, "SigningCertURL": CERT_URL}
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(sns_string_to_sign(message), padding.PKCS1v15(), algorithm)
    message["Signature"] = base64.b64encode(signature).decode()
    return message


NOTIFICATION = {
    "Type": "Notification",
    "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
    "TopicArn": "arn:aws:sns:eu-west-1:123456789012:ses-feedback",
    "Message": '{"notificationType":"Delivery"}',
    "Timestamp": "2026-01-05T10:00:00.000Z",
}
CONFIRMATION = {
    "Type": "SubscriptionConfirmation",
    "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
    "Token": "2336412f37fb687f5d51e6e2425f004ae",
    "TopicArn": "arn:aws:sns:eu-west-1:123456789012:ses-feedback",
    "Message": "You have chosen to subscribe to the topic.",
    "SubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=2336",
    "Timestamp": "2026-01-05T10:00:00.000Z",
}


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("message", [NOTIFICATION, CONFIRMATION], ids=["notification", "confirm"])
def test_sns_signature_versions(
    sns_key: rsa.RSAPrivateKey, version: str, message: dict[str, Any]
) -> None:
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return _certificate(sns_key)

    cache = CertificateCache(fetch)
    signed = _signed(sns_key, message, version)
    verify_sns(signed, cache, now=NOW)
    verify_sns(signed, cache, now=NOW)
    assert fetched == [CERT_URL]  # cached
    tampered = {**signed, "Message": signed["Message"] + " "}
    with pytest.raises(SignatureError):
        verify_sns(tampered, cache, now=NOW)


def test_sns_subject_is_signed_when_present(sns_key: rsa.RSAPrivateKey) -> None:
    cache = CertificateCache(lambda url: _certificate(sns_key))
    signed = _signed(sns_key, {**NOTIFICATION, "Subject": "Amazon SES Email Event"}, "2")
    verify_sns(signed, cache, now=NOW)
    with pytest.raises(SignatureError):
        verify_sns({**signed, "Subject": "other"}, cache, now=NOW)


def test_sns_wrong_key_and_expired_certificate(sns_key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signed = _signed(other, NOTIFICATION, "2")
    with pytest.raises(SignatureError, match="does not match"):
        verify_sns(signed, CertificateCache(lambda url: _certificate(sns_key)), now=NOW)
    good = _signed(sns_key, NOTIFICATION, "2")
    with pytest.raises(SignatureError, match="not valid now"):
        verify_sns(
            good,
            CertificateCache(lambda url: _certificate(sns_key)),
            now=NOW + timedelta(days=60),
        )
    with pytest.raises(SignatureError, match="SignatureVersion"):
        verify_sns({**good, "SignatureVersion": "3"}, CertificateCache(lambda url: b""), now=NOW)


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
        "https://evil.example/sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com/cert.txt",
        "https://user@sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com:8443/cert.pem",
        "https://s3.amazonaws.com/cert.pem",
    ],
)
def test_sns_certificate_url_is_restricted(url: str) -> None:
    with pytest.raises(SignatureError):
        check_sns_certificate_url(url)
    fetched: list[str] = []
    message = {**NOTIFICATION, "SignatureVersion": "2", "SigningCertURL": url, "Signature": "AA=="}
    with pytest.raises(SignatureError):
        verify_sns(message, CertificateCache(lambda u: fetched.append(u) or b""), now=NOW)
    assert fetched == []


def test_sns_certificate_url_accepts_regions() -> None:
    check_sns_certificate_url(CERT_URL)
    check_sns_certificate_url(
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem"
    )


def test_sendgrid_signed_events() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    public_b64 = base64.b64encode(
        private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    key = load_sendgrid_public_key(public_b64)
    body = b'[{"email":"a@example.org","event":"delivered"}]'
    stamp = "1767607200"
    signature = base64.b64encode(
        private.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    ).decode()
    verify_sendgrid(key, body, signature, stamp)
    verify_sendgrid(key, body, signature, stamp, max_age=300, now=1767607260.0)
    with pytest.raises(SignatureError):
        verify_sendgrid(key, body + b" ", signature, stamp)
    with pytest.raises(SignatureError):
        verify_sendgrid(key, body, signature, "1767607201")
    with pytest.raises(SignatureError):
        verify_sendgrid(key, body, signature, stamp, max_age=300, now=1767607200.0 + 3600)
    with pytest.raises(SignatureError):
        verify_sendgrid(key, body, "not base64!", stamp)
    with pytest.raises(SignatureError):
        verify_sendgrid(key, body, None, stamp)
    with pytest.raises(SignatureError):
        load_sendgrid_public_key("bm90IGEga2V5")


def _mailgun_signature(key: str, stamp: str, token: str) -> str:
    return hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()


def test_mailgun_hmac_window_and_replay() -> None:
    key, stamp, token = "key-0123456789", "1767607200", "a" * 50
    good = _mailgun_signature(key, stamp, token)
    guard = ReplayGuard()
    verify_mailgun(key, stamp, token, good, replay=guard.first_time, now=1767607210.0)
    with pytest.raises(SignatureError, match="replay"):
        verify_mailgun(key, stamp, token, good, replay=guard.first_time, now=1767607220.0)
    with pytest.raises(SignatureError, match="does not match"):
        verify_mailgun("other-key", stamp, "b" * 50, good, now=1767607210.0)
    with pytest.raises(SignatureError, match="window"):
        verify_mailgun(key, stamp, token, good, now=1767607200.0 + 3600)
    with pytest.raises(SignatureError):
        verify_mailgun(key, stamp, token, None, now=1767607210.0)


def test_replay_guard_forgets_old_tokens() -> None:
    guard = ReplayGuard(window=10)
    assert guard.first_time("t1", 100.0)
    assert not guard.first_time("t1", 105.0)
    assert guard.first_time("t2", 200.0)
    assert guard.first_time("t1", 200.0)  # outside the window: the timestamp check refuses it


def test_postmark_basic_auth() -> None:
    header = "Basic " + base64.b64encode(b"stoplist:s3cret").decode()
    assert check_basic_auth(header, "stoplist", "s3cret")
    assert not check_basic_auth(header, "stoplist", "other")
    assert not check_basic_auth("Bearer abc", "stoplist", "s3cret")
    assert not check_basic_auth("Basic !!!", "stoplist", "s3cret")
    assert not check_basic_auth(None, "stoplist", "s3cret")
    assert not check_basic_auth(header, "stoplist", "")


def test_sns_subscribe_url_is_restricted() -> None:
    check_sns_subscribe_url(CONFIRMATION["SubscribeURL"])
    for url in (
        "https://evil.example/?Action=ConfirmSubscription",
        "http://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",
        "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
        "https://sns.eu-west-1.amazonaws.com.evil.example/?Action=ConfirmSubscription",
    ):
        with pytest.raises(SignatureError):
            check_sns_subscribe_url(url)
