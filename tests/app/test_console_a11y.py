"""Accessibility of every console page, read from the HTML each one answers (as an admin, with
data, so every form is on the page): every form control has a label, every table header says
what it heads (scope), a skip link leads to the main content, ids are unique, and the stylesheet
draws a visible focus ring."""

from __future__ import annotations

import asyncio
import re
from html.parser import HTMLParser
from pathlib import Path

import httpx

from app.intake import IntakeStore
from tests.app.test_console import client_for, csrf_of, sign_in, suppress
from tests.conftest import Env

UNLABELLED_TYPES = {"hidden", "submit", "button", "reset", "image"}
CSS = Path(__file__).resolve().parents[2] / "app" / "console" / "static" / "console.css"


class Page(HTMLParser):
    """What the checks need of one page: its controls, labels, table headers, ids and links."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.controls: list[dict[str, str | None]] = []  # with "in_label" when wrapped
        self.label_for: set[str] = set()
        self.headers: list[dict[str, str | None]] = []
        self.ids: list[str] = []
        self.links: list[str] = []
        self._open_labels = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(str(a["id"]))
        if tag == "label":
            self._open_labels += 1
            if a.get("for"):
                self.label_for.add(str(a["for"]))
        elif tag in ("input", "select", "textarea", "progress", "meter"):
            if tag != "input" or (a.get("type") or "text") not in UNLABELLED_TYPES:
                self.controls.append(a | {"tag": tag, "in_label": "1" if self._open_labels else ""})
        elif tag == "th":
            self.headers.append(a)
        elif tag == "a" and a.get("href"):
            self.links.append(str(a["href"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._open_labels -= 1


def check_page(path: str, html: str) -> None:
    page = Page()
    page.feed(html)
    for c in page.controls:
        labelled = c["in_label"] or (c.get("id") in page.label_for) or c.get("aria-label")
        assert labelled, f"{path}: {c['tag']} name={c.get('name')!r} has no label"
    for th in page.headers:
        assert th.get("scope") in ("col", "row"), f"{path}: <th> without scope"
    assert len(page.ids) == len(set(page.ids)), f"{path}: duplicate ids {sorted(page.ids)}"
    if path != "/overview/chart.svg":
        assert page.links[:1] == ["#main"], f"{path}: the first link is not the skip link"
        assert "main" in page.ids


async def run_import(c: httpx.AsyncClient) -> str:
    form = await c.get("/import")
    body = b"address,reason\nok@a11y.example,manual\nbroken,manual\n"
    r = await c.post(
        "/import",
        data={"csrf": csrf_of(form.text), "format": "auto", "dry_run": "yes"},
        files={"file": ("list.csv", body, "text/csv")},
    )
    assert r.status_code == 303, r.text
    location = r.headers["location"]
    for _ in range(200):
        if "Import finished" in (await c.get(location)).text:
            return str(location)
        await asyncio.sleep(0.05)
    raise AssertionError("import did not finish")


async def test_every_page_labels_its_controls_and_heads_its_tables(sqlite_env: Env) -> None:
    env = sqlite_env
    stored = await IntakeStore(env.services.db).store(
        mail_from="", rcpt_to=["b@bounces.example"], peer=None, raw=b"Subject: x\r\n\r\nbody\r\n"
    )
    await suppress(env, "jo@a11y.example", message_id=stored.id)
    await suppress(env, "cx@a11y.example", outcome="complaint", reason="abuse", source="complaint")
    async with client_for(env) as anonymous:
        check_page("/signin", (await anonymous.get("/signin")).text)
    async with client_for(env) as c:
        assert (await sign_in(c, env.keys["admin"])).status_code == 303
        paths = [
            "/",
            "/find",
            "/find?q=jo@a11y.example",
            "/find?q=cx@a11y.example",
            "/find?q=a11y.example",
            "/find?q=nobody@a11y.example",
            "/list",
            "/import",
            await run_import(c),
            "/intake",
            f"/messages/{stored.id}",
            f"/messages/{stored.id}/explain",
            "/keys",
        ]
        for path in paths:
            r = await c.get(path)
            assert r.status_code == 200, (path, r.text[:500])
            check_page(path, r.text)


def test_the_stylesheet_draws_a_visible_focus_ring_and_reveals_the_skip_link() -> None:
    css = CSS.read_text()
    assert re.search(r":focus-visible\s*\{[^}]*outline:\s*[2-9]px solid", css)
    assert re.search(r"\.skip:focus\s*\{[^}]*left:\s*1rem", css)
