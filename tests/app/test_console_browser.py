"""The support console in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium against a ``stoplist serve`` process, on SQLite and on
PostgreSQL + Redis. Each page is saved as a screenshot into the folder the test prints
(``STOPLIST_SCREENSHOTS`` to choose it)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from app.container import build_services
from app.intake import IntakeStore
from app.keys import generate_key
from app.settings import Settings
from app.suppression import SuppressRequest
from tests.conftest import REQUIRE, _truncate

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# Would set window.__pwned if any of it ran as script or markup.
HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"><b>bold</b>'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def shots() -> Path:
    folder = Path(os.environ.get("STOPLIST_SCREENSHOTS") or tempfile.mkdtemp(prefix="console-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nconsole screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        message = "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        if REQUIRE:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


class Server:
    """``stoplist serve`` on a free port, with three keys and seeded data."""

    def __init__(
        self, settings: Settings, env: dict[str, str], keys: dict[str, str], log: Path
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        stoplist = Path(sys.executable).parent / "stoplist"
        self.log = log.open("wb")
        self.proc = subprocess.Popen(
            [str(stoplist), "serve"],
            env={**os.environ, **env, "STOPLIST_HTTP_PORT": str(self.port)},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError("stoplist serve did not start: " + log.read_text(errors="replace"))

    def check(self, address: str) -> bool:
        r = httpx.get(
            self.url + "/v1/check",
            params={"address": address},
            headers={"Authorization": f"Bearer {self.keys['admin']}"},
        )
        return bool(r.json()["suppressed"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


async def _seed(settings: Settings) -> dict[str, str]:
    services = build_services(settings)
    try:
        await _truncate(services)
        keys = {}
        for scope in ("read", "write", "admin"):
            _, keys[scope] = await services.keys.create(
                f"browser-{scope}", scope, actor="tests", key=generate_key()
            )
        raw = (
            b"From: <mailer-daemon@example.net>\r\nSubject: Undelivered\r\n"
            b"Content-Type: text/plain\r\n\r\n"
            + HOSTILE.encode()
            + b"\x00 "
            + b"L" * 100_000
            + b"\r\n"
        )
        stored = await IntakeStore(services.db).store(
            mail_from="", rcpt_to=["b@bounces.example"], peer=None, raw=raw
        )
        for address, diagnostic in (
            (
                "jane@example.com",
                "550 5.1.1 <jane@example.com>: Recipient address rejected: User unknown",
            ),
            ('"<script>x"@example.com', HOSTILE + " " + "D" * 100_000),
            ("reader@example.com", "550 5.1.1 user unknown"),
        ):
            await services.suppressions.suppress(
                SuppressRequest(
                    address=address,
                    outcome="hard",
                    reason="user_unknown",
                    source="bounce",
                    diagnostic=diagnostic,
                    reply_code=550,
                    status="5.1.1",
                    rule_id="text-user-unknown",
                    message_id=stored.id,
                )
            )
        return keys
    finally:
        await services.keys.close()
        await services.cache.close()
        await services.db.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    import asyncio

    from app.db import run_migrations

    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'console.db'}"
        run_migrations(Settings(database_url=url))
        settings = Settings(database_url=url)
        env = {"STOPLIST_DATABASE_URL": url}
    else:
        url, redis = request.getfixturevalue("pg_url"), request.getfixturevalue("redis_url")
        prefix = f"slbrowser-{uuid.uuid4().hex[:8]}:"
        settings = Settings(database_url=url, redis_url=redis, redis_prefix=prefix)
        env = {
            "STOPLIST_DATABASE_URL": url,
            "STOPLIST_REDIS_URL": redis,
            "STOPLIST_REDIS_PREFIX": prefix,
        }
    keys = asyncio.run(_seed(settings))
    srv = Server(settings, env, keys, tmp_path / "serve.log")
    srv.name = request.param  # type: ignore[attr-defined]
    try:
        yield srv
    finally:
        srv.stop()


def _shot(driver: webdriver.Chrome, shots: Path, srv: Server, name: str) -> None:
    driver.save_screenshot(str(shots / f"{srv.name}-{name}.png"))  # type: ignore[attr-defined]


def _shows(driver: webdriver.Chrome, by: str, value: str, text: str) -> None:
    """Wait until the element shows ``text``: a click that submits a form returns before the
    next page has replaced the current one."""
    WebDriverWait(
        driver, 15, ignored_exceptions=(StaleElementReferenceException, NoSuchElementException)
    ).until(lambda d: text in _text(d, by, value))


def _text(driver: webdriver.Chrome, by: str, value: str) -> str:
    """The element's text, or "" while the page that held it is being replaced. Chromium reports
    an element found just before the replacement either as stale or, when the node went between
    the find and the read, as an inspector error naming the node (seen in CI)."""
    try:
        return str(driver.find_element(by, value).text)
    except WebDriverException as e:
        if isinstance(e, StaleElementReferenceException | NoSuchElementException):
            raise
        if "does not belong to the document" in (e.msg or ""):
            return ""
        raise


def _sign_in(driver: webdriver.Chrome, srv: Server, scope: str) -> None:
    driver.delete_all_cookies()
    driver.get(srv.url + "/signin")
    driver.find_element(By.ID, "key").send_keys(srv.keys[scope])
    driver.find_element(By.CSS_SELECTOR, "form[action='/signin'] button").click()
    _shows(driver, By.TAG_NAME, "header", f"browser-{scope}")


def _find(driver: webdriver.Chrome, srv: Server, address: str) -> None:
    driver.get(srv.url + "/find")
    box = driver.find_element(By.ID, "q")
    box.send_keys(address)
    box.submit()
    WebDriverWait(driver, 15).until(lambda d: d.find_elements(By.ID, "verdict"))


def _not_pwned(driver: webdriver.Chrome) -> None:
    assert driver.execute_script("return window.__pwned === undefined")
    assert not driver.find_elements(By.CSS_SELECTOR, "main b, main img[src='x']")


def test_support_flows_in_a_browser(browser: webdriver.Chrome, server: Server, shots: Path) -> None:
    d, srv = browser, server
    d.get(srv.url + "/")
    assert "/signin" in d.current_url
    _shot(d, shots, srv, "signin")
    _sign_in(d, srv, "admin")
    _shot(d, shots, srv, "overview")
    assert "Overview" in d.title

    # Search, history, raw bounce, explanation.
    _find(d, srv, "  JANE@Example.COM ")
    _shows(d, By.CLASS_NAME, "verdict", "Blocked")
    assert "Recipient address rejected" in d.page_source
    _shot(d, shots, srv, "find")
    d.find_element(By.PARTIAL_LINK_TEXT, "raw message").click()
    _shows(d, By.TAG_NAME, "h1", "Stored message")
    _not_pwned(d)
    _shot(d, shots, srv, "message")
    d.back()
    d.find_element(By.LINK_TEXT, "explain").click()
    _shows(d, By.TAG_NAME, "h1", "Why: message")
    d.back()

    # Unsuppress with a reason: the pre-send check answers clear.
    d.find_element(By.ID, "reason").send_keys("mailbox fixed, ticket 4412")
    d.find_element(By.CSS_SELECTOR, "#unsuppress button").click()
    _shows(d, By.CLASS_NAME, "verdict", "Not blocked")
    assert not srv.check("jane@example.com")

    # Suppress by hand.
    _find(d, srv, "hand@example.org")
    d.find_element(By.ID, "s-reason").clear()
    d.find_element(By.ID, "s-reason").send_keys("customer_request")
    d.find_element(By.ID, "s-days").send_keys("30")
    d.find_element(By.CSS_SELECTOR, "#suppress button").click()
    _shows(d, By.CLASS_NAME, "verdict", "Blocked")
    assert srv.check("hand@example.org")

    # Hostile data stays text.
    _find(d, srv, '"<script>x"@example.com')
    _shows(d, By.TAG_NAME, "main", "<script>window.__pwned=1</script>")
    _not_pwned(d)
    _shot(d, shots, srv, "hostile")

    # The list, its export, an import with one bad row (dry run).
    d.get(srv.url + "/list")
    assert "hand@example.org" in d.page_source
    _shot(d, shots, srv, "list")
    export_href = d.find_element(By.PARTIAL_LINK_TEXT, "Export").get_attribute("href")
    cookie = d.get_cookie("stoplist_console")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    csv = httpx.get(str(export_href), cookies={"stoplist_console": cookie["value"]})
    assert csv.status_code == 200 and "hand@example.org" in csv.text
    upload = Path(tempfile.mkdtemp()) / "list.csv"
    upload.write_text(
        "address,outcome,reason\nok@imp.example,hard,user_unknown\nbroken-row,hard,x\n"
    )
    d.get(srv.url + "/import")
    _shot(d, shots, srv, "import")
    d.find_element(By.ID, "file").send_keys(str(upload))
    d.find_element(By.CSS_SELECTOR, "form[action='/import'] button").click()
    deadline = time.monotonic() + 30
    while "Import finished" not in d.page_source and time.monotonic() < deadline:
        time.sleep(0.3)
    errors = d.find_element(By.CLASS_NAME, "errors").text
    assert "3" in errors.split("\n")[1] and "broken-row" in errors
    _shot(d, shots, srv, "import-result")

    d.get(srv.url + "/intake")
    _shot(d, shots, srv, "intake")
    d.get(srv.url + "/keys")
    _shot(d, shots, srv, "keys")

    # A read key: no unsuppress button; a forged POST and a form without its token get 403.
    d.find_element(By.CSS_SELECTOR, "form[action='/signout'] button").click()
    _shows(d, By.TAG_NAME, "h1", "Sign in")
    _sign_in(d, srv, "read")
    _find(d, srv, "reader@example.com")
    _shows(d, By.CLASS_NAME, "verdict", "Blocked")
    assert not d.find_elements(By.ID, "unsuppress")
    _shot(d, shots, srv, "read-only")
    token = d.find_element(By.CSS_SELECTOR, "input[name='csrf']").get_attribute("value")
    forge = """
        const f = document.createElement('form'); f.method = 'post'; f.action = '/unsuppress';
        for (const [k, v] of Object.entries(arguments[0])) {
            const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i);
        }
        document.body.appendChild(f); f.submit();"""
    d.execute_script(forge, {"address": "reader@example.com", "reason": "forged", "csrf": token})
    _shows(d, By.TAG_NAME, "h1", "403")
    assert "needs 'write'" in d.page_source
    d.back()
    d.execute_script(forge, {"address": "reader@example.com", "reason": "no token"})
    _shows(d, By.TAG_NAME, "p", "CSRF")
    assert "403" in d.find_element(By.TAG_NAME, "h1").text
    assert srv.check("reader@example.com")
