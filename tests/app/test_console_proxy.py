"""The console's sign-in throttle behind a reverse proxy, through a real uvicorn on loopback with
the proxy options ``stoplist serve`` uses: X-Forwarded-For names the client only when the peer is
in STOPLIST_TRUSTED_PROXIES; from any other peer it is ignored (a client cannot choose a fresh
address per attempt)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import uvicorn

from app.cli.serve import proxy_options
from app.main import create_app
from app.settings import Settings
from tests.app.test_console import csrf_of
from tests.conftest import Env


@asynccontextmanager
async def served(env: Env, trusted: str) -> AsyncIterator[str]:
    """The app behind uvicorn on 127.0.0.1 with STOPLIST_TRUSTED_PROXIES=``trusted``."""
    settings = Settings(trusted_proxies=trusted)  # type: ignore[arg-type]
    config = uvicorn.Config(
        create_app(env.settings, services=env.services),
        host="127.0.0.1",
        port=0,
        log_config=None,
        http="h11",
        ws="none",
        lifespan="on",
        **proxy_options(settings),
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


async def attempt(c: httpx.AsyncClient, forwarded_for: str) -> int:
    """One sign-in with a wrong key, as relayed for ``forwarded_for``; the answer's status."""
    form = await c.get("/signin")
    r = await c.post(
        "/signin",
        data={"key": "sl_" + "x" * 40, "csrf": csrf_of(form.text), "next": "/"},
        headers={"X-Forwarded-For": forwarded_for},
    )
    return r.status_code


@pytest.mark.parametrize(
    ("trusted", "separate", "chain_believed"),
    [
        ("127.0.0.1,::1", True, False),
        ("10.0.0.0/8", False, False),
        ("", False, False),
        # Every hop trusted: the client's own leftmost entry is believed (hence the warning in
        # the README: only when nothing but proxies that overwrite the header reaches the port).
        ("*", True, True),
    ],
)
async def test_forwarded_for_counts_only_from_trusted_proxies(
    sqlite_env: Env, trusted: str, separate: bool, chain_believed: bool
) -> None:
    async with served(sqlite_env, trusted) as url, httpx.AsyncClient(base_url=url) as c:
        assert [await attempt(c, "203.0.113.5") for _ in range(5)] == [401] * 5
        assert await attempt(c, "203.0.113.5") == 429
        # A client naming another address in front of the one the proxy appended: the proxy's
        # (rightmost untrusted) entry counts, not the client's claim.
        assert await attempt(c, "198.51.100.7, 203.0.113.5") == (401 if chain_believed else 429)
        # Another client behind the same proxy: its own count when the proxy is trusted; the
        # same (the peer's) when the header is not believed.
        assert await attempt(c, "192.0.2.9") == (401 if separate else 429)


def test_trusted_proxies_setting_is_checked() -> None:
    assert Settings().trusted_proxies == ["127.0.0.1", "::1"]
    assert Settings(trusted_proxies=" 10.0.0.0/8, 192.0.2.1 ").trusted_proxies == [  # type: ignore[arg-type]
        "10.0.0.0/8",
        "192.0.2.1",
    ]
    assert proxy_options(Settings(trusted_proxies="")) == {  # type: ignore[arg-type]
        "proxy_headers": False,
        "forwarded_allow_ips": None,
    }
    assert proxy_options(Settings(trusted_proxies="*,10.0.0.1"))["forwarded_allow_ips"] == "*"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"proxy\.example"):
        Settings(trusted_proxies="proxy.example")  # type: ignore[arg-type]
