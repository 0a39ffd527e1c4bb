"""Configuration: one pydantic-settings class, read once from the environment (prefix ``STOPLIST_``).

A bad value fails at start with a message naming the variable (see :func:`load_settings`).
"""

from __future__ import annotations

import base64
import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.logs import LogFormat
from app.signing import parse_signing_keys
from app.streams import GLOBAL_SCOPE, STREAM_RE

# Delay before each webhook attempt after the first: ~23.7 h in all (docs/webhooks.md).
DEFAULT_RETRY_DELAYS_S: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 28800)


class SettingsError(RuntimeError):
    """Raised at start-up when the environment holds an invalid value."""


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STOPLIST_", env_file=None, extra="ignore", frozen=True
    )

    # Storage
    database_url: str = Field(
        default="sqlite+aiosqlite:///./var/stoplist.db",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://...",
    )
    database_pool_size: int = Field(default=10, ge=1, le=500)
    database_timeout_s: float = Field(
        default=5.0, gt=0, description="Connect and statement timeout for database calls"
    )
    database_pooler: Literal["none", "pgbouncer"] = Field(
        default="none",
        description="pgbouncer: the URL points at PgBouncer in transaction pooling mode, so no "
        "prepared statement is reused across transactions",
    )
    redis_url: str | None = Field(
        default=None,
        description="redis://host:6379/0 or redis+cluster://host:port,host:port; unset = "
        "in-process cache (embedded mode)",
    )
    redis_prefix: str = Field(default="stoplist:", min_length=1, max_length=64)
    redis_timeout_s: float = Field(default=0.5, gt=0)

    # HTTP API
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8025, ge=1, le=65535)
    bootstrap_admin_key: SecretStr | None = Field(
        default=None,
        description="Admin API key to create on first start instead of printing a generated one",
    )
    auth_cache_ttl_s: float = Field(
        default=5.0, ge=0, description="How long a verified API key is trusted before re-reading it"
    )
    max_batch: int = Field(default=10_000, ge=1, le=100_000)

    # SMTP sink (bounce and feedback-loop intake)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=2525, ge=0, le=65535)
    smtp_domains: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Domains (bounces.example.net) or addresses (fbl@example.net) the sink accepts",
    )
    smtp_enabled: bool | None = Field(
        default=None,
        description="Run the SMTP sink inside `serve`; unset = on when STOPLIST_SMTP_DOMAINS is set",
    )
    smtp_hostname: str | None = Field(default=None, description="Name in the greeting")
    smtp_max_message_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    smtp_max_recipients: int = Field(default=100, ge=1)
    smtp_max_connections: int = Field(default=200, ge=1)
    smtp_timeout_s: float = Field(
        default=300.0, gt=0, description="Idle time allowed between commands, and for all of DATA"
    )
    smtp_session_timeout_s: float = Field(
        default=1800.0,
        gt=0,
        description="A whole SMTP session may last this long (a client trickling bytes included)",
    )
    smtp_tls_cert: Path | None = None
    smtp_tls_key: Path | None = None
    smtp_allowed_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="CIDRs that may connect; empty = anyone"
    )
    smtp_storage_timeout_s: float = Field(
        default=10.0, gt=0, description="Storing a message before 250 may take this long, else 451"
    )

    # Intake processing (after the message is stored)
    parse_timeout_s: float = Field(default=10.0, gt=0, description="Wall time per message parse")
    parse_memory_mb: int = Field(
        default=512, ge=64, description="Address space a parse worker may grow by"
    )
    parse_workers: int = Field(default=0, ge=0, description="0 = one per CPU")
    parse_inline_max_bytes: int = Field(
        default=0, ge=0, description="Parse messages up to this size in-process (0 = never)"
    )
    intake_concurrency: int = Field(
        default=4, ge=1, description="Batches of messages processed at once (see app.intake)"
    )
    intake_claim_timeout_s: float = Field(
        default=300.0, gt=0, description="A claim older than this is retried by any replica"
    )
    intake_max_attempts: int = Field(default=3, ge=1)
    intake_sweep_interval_s: float = Field(default=30.0, gt=0)
    intake_process: Literal["inline", "separate"] = Field(
        default="separate",
        description="Where stored messages are processed on PostgreSQL: on the service's event "
        "loop, or in one child process of its own (see app.intake.child)",
    )
    raw_retention_days: float = Field(
        default=30.0, ge=0, description="Drop raw bytes of finished messages after this (0 = keep)"
    )

    # Deliverability rates (app.rates): retention per bucket size, and how often it is applied
    rates_5min_days: float = Field(default=2.0, gt=0, description="Keep 5-minute buckets this long")
    rates_hourly_days: float = Field(
        default=35.0, gt=0, description="Keep hourly buckets this long"
    )
    rates_daily_days: float = Field(default=400.0, gt=0, description="Keep daily buckets this long")
    rates_prune_interval_s: float = Field(
        default=300.0, gt=0, description="How often `serve` deletes buckets past their retention"
    )

    # Suppression policy
    soft_bounce_threshold: int = Field(default=3, ge=1)
    soft_bounce_window_h: float = Field(default=72.0, gt=0)
    soft_suppression_days: float = Field(default=7.0, gt=0)

    # Signed references (return paths, X-Stoplist-Ref, unsubscribe links): docs/signed-return-paths.md
    signing_keys: SecretStr | None = Field(
        default=None,
        description="<key id>:<base64 secret>,...; the first signs, all verify. Unset = no signing",
    )
    require_signed_bounces: bool = Field(
        default=False, description="Apply only bounces whose return path or reference verifies"
    )
    require_signed_reports: bool = Field(
        default=False, description="Apply only complaints whose X-Stoplist-Ref verifies"
    )
    token_max_age_days: float = Field(
        default=30.0, gt=0, description="Return paths and X-Stoplist-Ref tokens older are refused"
    )
    unsubscribe_token_max_age_days: float = Field(
        default=365.0, gt=0, description="Unsubscribe links and addresses older are refused"
    )
    return_path_domain: str | None = Field(default=None, description="bounces.example.net")
    return_path_prefix: str = Field(default="b", pattern=r"^[a-z0-9][a-z0-9._-]{0,15}$")
    unsubscribe_domain: str | None = Field(default=None, description="unsubscribe.example.net")
    unsubscribe_local_prefix: str = Field(
        default="unsubscribe", pattern=r"^[a-z0-9][a-z0-9._-]{0,15}$"
    )
    public_base_url: str | None = Field(
        default=None, description="https://stoplist.example.net: base of one-click unsubscribe URLs"
    )
    unsubscribe_default_stream: str = Field(
        default="marketing",
        description="Scope of an unsubscribe that names no stream ('global' blocks every stream)",
    )
    webhook_enabled: bool = Field(
        default=True, description="Run the outbound webhook delivery worker in `serve`"
    )
    webhook_allowed_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="CIDRs webhook targets may resolve into although private (http allowed there)",
    )
    webhook_secret_key: SecretStr | None = Field(
        default=None, description="base64 of 32 bytes: encrypts webhook signing secrets at rest"
    )
    webhook_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="Connect and read timeout of one webhook request"
    )
    webhook_retry_delays_s: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_DELAYS_S),
        description="Delay before each attempt after the first (±20 % jitter); then dead",
    )
    webhook_disable_after_h: float = Field(
        default=24.0, gt=0, description="An endpoint failing every attempt this long is disabled"
    )
    webhook_concurrency: int = Field(
        default=256, ge=1, le=1000, description="Webhook requests in flight per worker"
    )
    webhook_subscription_concurrency: int = Field(
        default=64,
        ge=1,
        le=1000,
        description="Requests in flight to one subscription (at most the total)",
    )
    webhook_retention_days: float = Field(
        default=7.0, gt=0, description="Sent deliveries and fed events are kept this long"
    )

    @field_validator("webhook_allowed_networks", mode="before")
    @classmethod
    def _webhook_networks(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, list):
            for net in value:
                ipaddress.ip_network(str(net), strict=False)  # ValueError names the bad one
        return value

    @field_validator("webhook_retry_delays_s", mode="before")
    @classmethod
    def _retry_delays(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, list) and not value:
            raise ValueError("at least one delay")
        return value

    @field_validator("webhook_secret_key")
    @classmethod
    def _webhook_secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                raw = base64.b64decode(value.get_secret_value(), validate=True)
            except ValueError:
                raise ValueError("not base64") from None
            if len(raw) != 32:
                raise ValueError("must be 32 bytes (openssl rand -base64 32)")
        return value

    # Delivery-event webhooks (POST /v1/events/{source}); see docs/events.md
    ses_topic_arns: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="SNS topic ARNs whose signed messages are accepted (empty: SES needs a key)",
    )
    sendgrid_public_key: str | None = Field(
        default=None, description="SendGrid signed Event Webhook verification key (base64 DER)"
    )
    mailgun_signing_key: SecretStr | None = Field(
        default=None, description="Mailgun HTTP webhook signing key"
    )
    postmark_basic_auth: SecretStr | None = Field(
        default=None, description="user:password in the Postmark webhook URL"
    )
    # Support console (served at / by `stoplist serve`)
    console_idle_minutes: float = Field(
        default=30, gt=0, description="A console session unused this long is signed out"
    )
    console_max_hours: float = Field(
        default=12, gt=0, description="A console session ends this long after sign-in, used or not"
    )
    log_format: LogFormat = Field(
        default="text", description="Log lines as text, or as one JSON object each (app.logs)"
    )
    events_timestamp_tolerance_s: float = Field(
        default=600.0,
        gt=0,
        description="SendGrid and Mailgun signatures whose timestamp is further from now are "
        "refused (replay protection, like Stripe's and Standard Webhooks' tolerance)",
    )
    events_max_body_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="Largest body POST /v1/events/* takes (413)"
    )
    event_retention_days: float = Field(
        default=7.0,
        ge=0,
        description="Delivery events received longer ago are pruned (0 = keep); must exceed the "
        "senders' retry horizon, since a replay older than this is recorded again",
    )
    event_error_retention_days: float = Field(
        default=30.0, ge=0, description="Unreadable event records are kept this long (0 = keep)"
    )
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (uvicorn's
    # --forwarded-allow-ips): the console's sign-in throttle counts per client behind them.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="Addresses or CIDRs of trusted proxies; * = every peer; empty = none",
    )

    @field_validator("smtp_domains", mode="before")
    @classmethod
    def _domains(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("smtp_allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, list):
            for net in value:
                ipaddress.ip_network(str(net), strict=False)  # ValueError names the bad one
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, list):
            for net in value:
                if net != "*":
                    ipaddress.ip_network(str(net), strict=False)  # ValueError names the bad one
        return value

    @field_validator("ses_topic_arns", mode="before")
    @classmethod
    def _topics(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("sendgrid_public_key")
    @classmethod
    def _sendgrid_key(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        from events.signatures import SignatureError, load_sendgrid_public_key

        try:
            load_sendgrid_public_key(value)
        except SignatureError as exc:
            raise ValueError(str(exc)) from None
        return value.strip()

    @field_validator("postmark_basic_auth")
    @classmethod
    def _basic_auth(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        user, sep, password = value.get_secret_value().partition(":")
        if not sep or not user or len(password) < 16:
            raise ValueError("user:password, the password at least 16 characters")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if value.startswith("redis+cluster://"):
            # Seed nodes host:port,host:port (the cache parses them the same way).
            nodes = value.removeprefix("redis+cluster://").split("/", 1)[0].rsplit("@", 1)[-1]
            for node in nodes.split(","):
                host, _, port = node.strip().rpartition(":")
                if not host or not port.isdigit():
                    raise ValueError(f"redis+cluster://: {node!r} is not host:port")
            return value
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss://, unix:// or redis+cluster://")
        return value

    @field_validator("bootstrap_admin_key")
    @classmethod
    def _bootstrap_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError(
                "must be at least 32 characters (generate one with `stoplist keys generate`)"
            )
        return value

    @field_validator("signing_keys")
    @classmethod
    def _signing_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        parse_signing_keys(
            value.get_secret_value()
        )  # ValueError says what is wrong, not the secret
        return value

    @field_validator("require_signed_bounces", "require_signed_reports")
    @classmethod
    def _require_needs_keys(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("signing_keys") is None:
            raise ValueError("needs STOPLIST_SIGNING_KEYS")
        return value

    @field_validator("unsubscribe_default_stream")
    @classmethod
    def _default_stream(cls, value: str) -> str:
        if value != GLOBAL_SCOPE and not STREAM_RE.match(value):
            raise ValueError("a stream name (a-z 0-9 _ . -) or 'global'")
        return value

    @field_validator("public_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (or http:// for testing)")
        return value.rstrip("/")

    @property
    def sink_enabled(self) -> bool:
        enabled = bool(self.smtp_domains) if self.smtp_enabled is None else self.smtp_enabled
        return enabled and self.smtp_port > 0

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def sqlite_path(self) -> Path | None:
        if not self.is_sqlite:
            return None
        path = self.database_url.split(":///", 1)[1]
        return None if path in ("", ":memory:") else Path(path)


def load_settings(**overrides: object) -> Settings:
    """Read the environment; turn a validation error into one line per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = "STOPLIST_" + "_".join(str(p) for p in err["loc"][:1]).upper()
            lines.append(f"{name}: {err['msg']}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
