"""Configuration: defaults, production values, and errors that name the variable."""

from __future__ import annotations

import pytest

from app.settings import SettingsError, load_settings


def test_defaults_are_the_embedded_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STOPLIST_DATABASE_URL", "STOPLIST_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert s.is_sqlite
    assert s.redis_url is None


def test_production_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOPLIST_DATABASE_URL", "postgresql+asyncpg://u@db/stoplist")
    monkeypatch.setenv("STOPLIST_REDIS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("STOPLIST_SMTP_DOMAINS", "bounces.example.net, fbl.example.net")
    s = load_settings()
    assert not s.is_sqlite
    assert s.smtp_domains == ["bounces.example.net", "fbl.example.net"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STOPLIST_DATABASE_URL", "mysql://x/y"),
        ("STOPLIST_REDIS_URL", "memcached://x"),
        ("STOPLIST_HTTP_PORT", "http"),
        ("STOPLIST_HTTP_PORT", "70000"),
        ("STOPLIST_SOFT_BOUNCE_THRESHOLD", "0"),
        ("STOPLIST_BOOTSTRAP_ADMIN_KEY", "changeme"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert name in str(info.value)


def test_every_setting_is_documented_in_the_readme() -> None:
    from pathlib import Path

    from app.settings import Settings

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [
        f"STOPLIST_{name.upper()}"
        for name in Settings.model_fields
        if f"STOPLIST_{name.upper()}" not in readme
    ]
    assert missing == []
