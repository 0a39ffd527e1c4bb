"""What the webhook tests share: a service whose senders' keys are made here, and requests signed
the way each sender signs them (SNS RSA certificates, SendGrid ECDSA, Mailgun HMAC, Postmark
Basic), so the routes are driven exactly as the senders drive them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from pydantic import SecretStr
from sqlalchemy import func, select

from app.events import WebhookIntake
from app.main import create_app
from app.models import DeliveryEvent, DeliveryEventError
from app.settings import Settings
from events import parse_kumomta_request
from events.signatures import sns_string_to_sign
from tests.conftest import Env, make_env

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "events"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000.pem"
TOPICS = [
    "arn:aws:sns:eu-west-1:123456789012:ses-feedback",
    "arn:aws:sns:eu-west-1:123456789012:ses-events",
]
MAILGUN_KEY = "key-" + "0123456789abcdef" * 2
POSTMARK_USER, POSTMARK_PASSWORD = "postmark", "a-long-enough-password-1234"


@dataclass(frozen=True)
class Keys:
    """The senders' secrets: made once per test session (an RSA key takes a while)."""

    sns: rsa.RSAPrivateKey
    sns_pem: bytes
    sendgrid: ec.EllipticCurvePrivateKey

    @classmethod
    def make(cls) -> Keys:
        sns = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(sns.public_key())
            .serial_number(1)
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .sign(sns, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM)
        return cls(sns, pem, ec.generate_private_key(ec.SECP256R1()))

    def sendgrid_public(self) -> str:
        der = self.sendgrid.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()


_KEYS: list[Keys] = []


def keys() -> Keys:
    if not _KEYS:
        _KEYS.append(Keys.make())
    return _KEYS[0]


@dataclass
class Hooks:
    """The service with every sender configured, and a client on an app whose SNS certificate
    download returns ours (counted in ``fetched``)."""

    env: Env
    client: httpx.AsyncClient
    fetched: list[str]

    # ------------------------------------------------------------------ signed requests
    async def post(self, source: str, body: bytes, **headers: str) -> httpx.Response:
        return await self.client.post(f"/v1/events/{source}", content=body, headers=headers)

    async def send(self, source: str, body: bytes) -> httpx.Response:
        """``body`` as its sender sends it, signed or authenticated its way."""
        if source == "ses":
            return await self.post(source, sign_sns(body))
        if source == "sendgrid":
            stamp = str(int(time.time()))
            return await self.post(source, body, **sendgrid_headers(body, stamp))
        if source == "mailgun":
            return await self.post(source, sign_mailgun(body))
        if source == "postmark":
            return await self.post(source, body, Authorization=basic(POSTMARK_PASSWORD))
        return await self.post(source, body, **self.env.auth("admin"))

    # ------------------------------------------------------------------ reading back
    async def stored(self) -> int:
        async with self.env.services.db.read() as s:
            return int((await s.execute(select(func.count(DeliveryEvent.id)))).scalar_one())

    async def errors(self) -> list[DeliveryEventError]:
        async with self.env.services.db.read() as s:
            return list((await s.execute(select(DeliveryEventError))).scalars())

    async def check(self, address: str, stream: str | None = None) -> dict[str, Any]:
        params = {"address": address} | ({"stream": stream} if stream else {})
        r = await self.client.get("/v1/check", params=params, headers=self.env.auth("check"))
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer


def hook_settings(base: Settings) -> Settings:
    return base.model_copy(
        update={
            "ses_topic_arns": TOPICS,
            "sendgrid_public_key": keys().sendgrid_public(),
            "mailgun_signing_key": SecretStr(MAILGUN_KEY),
            "postmark_basic_auth": SecretStr(f"{POSTMARK_USER}:{POSTMARK_PASSWORD}"),
        }
    )


async def make_hooks(name: str, base: Settings) -> Hooks:
    settings = hook_settings(base)
    env = await make_env(name, settings)
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return keys().sns_pem

    app = create_app(settings, services=env.services)
    app.state.event_intake = WebhookIntake(fetch=fetch)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    return Hooks(env, client, fetched)


def sign_sns(body: bytes, version: str = "2") -> bytes:
    message = json.loads(body)
    if message.get("Type") not in ("Notification", "SubscriptionConfirmation"):
        return body
    message = {**message, "SignatureVersion": version, "SigningCertURL": CERT_URL}
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    raw = keys().sns.sign(sns_string_to_sign(message), padding.PKCS1v15(), algorithm)
    message["Signature"] = base64.b64encode(raw).decode()
    return json.dumps(message).encode()


def sendgrid_headers(body: bytes, stamp: str) -> dict[str, str]:
    raw = keys().sendgrid.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(raw).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }


def sign_mailgun(body: bytes, token: str | None = None, key: str = MAILGUN_KEY) -> bytes:
    data = json.loads(body)
    stamp, token = str(int(time.time())), token or secrets.token_hex(25)
    digest = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    data["signature"] = {"timestamp": stamp, "token": token, "signature": digest}
    return json.dumps(data).encode()


def basic(password: str, user: str = POSTMARK_USER) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def samples(source: str) -> list[tuple[bytes, dict[str, Any]]]:
    """(body, expected parse) of each webhook sample of ``source``."""
    out = []
    for path in sorted(SAMPLES.glob(f"{source}-*.json")):
        if path.name.endswith(".expected.json"):
            continue
        expected = json.loads(path.with_name(path.stem + ".expected.json").read_text())
        out.append((path.read_bytes(), expected))
    if source == "kumomta":
        out.append(_kumomta_log_as_hook())
    return out


def _kumomta_log_as_hook() -> tuple[bytes, dict[str, Any]]:
    """The KumoMTA log sample's records as one batched log hook request (a JSON array)."""
    records = []
    for line in (SAMPLES / "kumomta-01.jsonl").read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    body = json.dumps(records).encode()
    return body, parse_kumomta_request(body, "hook").to_json()
