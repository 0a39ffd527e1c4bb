"""The image's HEALTHCHECK calls the API where ``STOPLIST_HTTP_HOST`` binds it."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


def _healthcheck_code() -> str:
    match = re.search(r'HEALTHCHECK[^\n]*\\\n\s*CMD python -c "([^"]+)"', DOCKERFILE.read_text())
    assert match, "no python HEALTHCHECK in the Dockerfile"
    return match.group(1)


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        (None, None, "http://127.0.0.1:8025/healthz"),
        ("0.0.0.0", "9000", "http://127.0.0.1:9000/healthz"),
        ("10.1.2.3", None, "http://10.1.2.3:8025/healthz"),
        ("::", None, "http://[::1]:8025/healthz"),
        ("fd00::5", "81", "http://[fd00::5]:81/healthz"),
    ],
)
def test_healthcheck_calls_the_configured_address(
    monkeypatch: pytest.MonkeyPatch, host: str | None, port: str | None, url: str
) -> None:
    for name, value in (("STOPLIST_HTTP_HOST", host), ("STOPLIST_HTTP_PORT", port)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    called: list[str] = []

    def fake_urlopen(target: str, timeout: float) -> Any:
        called.append(target)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    exec(_healthcheck_code(), {})
    assert called == [url]


def test_the_image_installs_pinned_versions() -> None:
    """Every runtime dependency is pinned in constraints.txt, and the Dockerfile installs with it."""
    import tomllib

    root = DOCKERFILE.parent
    text = DOCKERFILE.read_text()
    assert "COPY pyproject.toml README.md constraints.txt" in text
    assert "pip install --quiet -c constraints.txt ." in text
    pinned = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (root / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[\[<>=~ ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}
    assert names - pinned == set()
