"""Configuration: one pydantic-settings class, read once from the environment (prefix ``STOPLIST_``).

A bad value fails at start with a message naming the variable (see :func:`load_settings`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

STREAM_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
GLOBAL_SCOPE = "global"


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
    redis_url: str | None = Field(
        default=None, description="redis://host:6379/0; unset = in-process cache (embedded mode)"
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
    smtp_domains: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Suppression policy
    soft_bounce_threshold: int = Field(default=3, ge=1)
    soft_bounce_window_h: float = Field(default=72.0, gt=0)
    soft_suppression_days: float = Field(default=7.0, gt=0)

    @field_validator("smtp_domains", mode="before")
    @classmethod
    def _domains(cls, value: object) -> object:
        return _split_csv(value)

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
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("bootstrap_admin_key")
    @classmethod
    def _bootstrap_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError(
                "must be at least 32 characters (generate one with `stoplist keys new`)"
            )
        return value

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
