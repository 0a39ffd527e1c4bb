"""Bulk CSV import and export, on SQLite + memory cache and PostgreSQL + Redis.

Provider presets are golden files: ``samples/csv/<preset>-NN.csv`` with ``.expected.json`` beside
it (``STOPLIST_UPDATE_GOLDEN=1`` rewrites them; read the diff).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from app import bulk
from app.models import AuditEntry, Event, Suppression
from tests.conftest import Env

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "csv"
CSV_FILES = sorted(SAMPLES.glob("*.csv"))
IMPORT = "/v1/suppressions/import"
EXPORT = "/v1/suppressions/export"


def preset_of(path: Path) -> str:
    return path.stem.rsplit("-", 1)[0]


async def do_import(
    env: Env,
    body: bytes | AsyncIterator[bytes],
    headers: dict[str, str] | None = None,
    **params: Any,
) -> dict[str, Any]:
    r = await env.client.post(
        IMPORT,
        content=body,
        params={k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()},
        headers=env.auth("write") | {"content-type": "text/csv"} | (headers or {}),
    )
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def do_export(env: Env, **params: Any) -> str:
    r = await env.client.get(
        EXPORT,
        params={k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()},
        headers=env.auth("read"),
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    return r.text


async def stored(env: Env) -> list[dict[str, Any]]:
    async with env.services.db.read() as s:
        rows = (await s.scalars(select(Suppression).order_by(Suppression.id))).all()
    return [
        {
            "address": r.address,
            "scope": r.scope,
            "outcome": r.outcome,
            "reason": r.reason,
            "expires_at": bulk.format_time(r.expires_at) or None,
            "first_seen": bulk.format_time(r.first_seen),
            "note": (r.detail or {}).get("note"),
            "active": r.removed_at is None,
        }
        for r in rows
    ]


async def count(env: Env, model: Any) -> int:
    async with env.services.db.read() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def assert_cache_matches_db(env: Env, addresses: list[str]) -> None:
    sup = env.services.suppressions
    cached = await env.services.cache.get_many(addresses)
    from_db = await sup.entries_from_db(addresses)
    for address, c, d in zip(addresses, cached, from_db, strict=True):
        key = lambda e: e.scope  # noqa: E731
        assert sorted(c or (), key=key) == sorted(d or (), key=key), address


def summary_counts(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("rows", "inserted", "updated", "unchanged", "skipped", "invalid", "format")
    return {k: summary[k] for k in keys}


# ------------------------------------------------------------------------------ presets


@pytest.mark.parametrize("path", CSV_FILES, ids=[p.name for p in CSV_FILES])
async def test_preset_sample(env: Env, path: Path) -> None:
    summary = await do_import(env, path.read_bytes(), format=preset_of(path))
    actual = {
        "summary": summary_counts(summary) | {"errors": summary["errors"]},
        "suppressions": [
            {k: v for k, v in row.items() if k != "active"} for row in await stored(env)
        ],
    }
    expected_path = path.with_suffix(".expected.json")
    if os.environ.get("STOPLIST_UPDATE_GOLDEN") == "1":
        expected_path.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
        return
    assert expected_path.exists(), f"no {expected_path.name}: run with STOPLIST_UPDATE_GOLDEN=1"
    assert actual == json.loads(expected_path.read_text())


def test_every_preset_has_a_sample() -> None:
    assert {preset_of(p) for p in CSV_FILES} == set(bulk.PRESETS)


@pytest.mark.parametrize(
    "name",
        ["stoplist", "ses", "sendgrid-bounces", "sendgrid-spam-reports", "postmark",
         "mailgun-bounces", "mailgun-unsubscribes"],
)  # fmt: skip
def test_auto_detects_the_preset_from_the_header(name: str) -> None:
    summary = bulk.ImportSummary()
    parser = bulk.RowParser(bulk.ImportOptions(), summary)
    records = bulk.CsvRecords().push((SAMPLES / f"{name}-01.csv").read_bytes(), final=True)
    parser.add(records)
    assert summary.format == name
    assert summary.invalid == 0


async def test_sendgrid_blocks_expire_after_the_soft_period(env: Env) -> None:
    created = int((datetime.now(UTC) - timedelta(days=1)).timestamp())
    body = f"created,email,reason,status\n{created},b@example.com,554 blocked,5.7.1\n".encode()
    summary = await do_import(env, body, format="sendgrid-blocks")
    assert summary["inserted"] == 1
    (row,) = await stored(env)
    assert (row["outcome"], row["reason"]) == ("soft", "blocked")
    expires = datetime.fromisoformat(row["expires_at"])
    expected = datetime.fromtimestamp(created, UTC) + timedelta(days=7)
    assert abs((expires - expected).total_seconds()) < 1


# ------------------------------------------------------------------------------ reading CSV


ROWS = (
    "address,outcome,reason,stream,expires_at,created_at,note\n"
    "one@example.com,hard,user_unknown,,,2024-01-01T00:00:00Z,\n"
    'two@example.com,complaint,,marketing,,,"a note, with a comma\nand a line break"\n'
    "three@example.com,,,,,,\n"
)
EXPECTED = [
    ("one@example.com", "global", "hard", "user_unknown", None),
    ("two@example.com", "marketing", "complaint", "import", "a note, with a comma\nand a line break"),
    ("three@example.com", "global", "manual", "import", None),
]  # fmt: skip


def multipart(data: bytes, boundary: str = "XyZ123") -> tuple[bytes, dict[str, str]]:
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="comment"\r\n\r\nhello\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.csv"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


VARIANTS: dict[str, tuple[bytes, dict[str, str]]] = {
    "plain": (ROWS.encode(), {}),
    "bom-crlf": (b"\xef\xbb\xbf" + ROWS.replace("\n", "\r\n").encode(), {}),
    "gzip-magic": (gzip.compress(ROWS.encode()), {}),
    "gzip-header": (gzip.compress(ROWS.encode()), {"content-encoding": "gzip"}),
    "excel-semicolon": (
        ("sep=;\r\n" + ROWS.replace(",", ";").replace("a note; with", "a note, with"))
        .replace("\n", "\r\n")
        .encode("utf-8-sig"),
        {},
    ),
    "sniffed-semicolon": (ROWS.replace(",", ";").replace("a note; with", "a note, with").encode(), {}),
    "multipart": multipart(ROWS.encode()),
    "multipart-gzip": multipart(gzip.compress(ROWS.encode())),
}  # fmt: skip


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_real_world_csv_variants(env: Env, variant: str) -> None:
    body, headers = VARIANTS[variant]
    summary = await do_import(env, body, headers)
    assert summary_counts(summary) == {
        "rows": 3, "inserted": 3, "updated": 0, "unchanged": 0, "skipped": 0, "invalid": 0,
        "format": "stoplist",
    }, summary  # fmt: skip
    got = [
        (r["address"], r["scope"], r["outcome"], r["reason"], r["note"]) for r in await stored(env)
    ]
    note = EXPECTED[1][4]
    if "crlf" in variant or "excel" in variant:
        note = note.replace("\n", "\r\n")  # a line break inside a quoted field is kept as written
    assert got == [EXPECTED[0], (*EXPECTED[1][:4], note), EXPECTED[2]]


def test_records_survive_any_chunking() -> None:
    data = ('a,"b\r\n""c"", d"\r\n' * 3 + "x,y\nlast,row").encode("utf-8-sig")
    whole = bulk.CsvRecords().push(data, final=True)
    assert whole[0] == (1, ["a", 'b\r\n"c", d'])
    assert whole[-1] == (8, ["last", "row"])
    for size in (1, 2, 3, 7):
        parser = bulk.CsvRecords()
        got: list[Any] = []
        for i in range(0, len(data), size):
            got += parser.push(data[i : i + size])
        got += parser.push(b"", final=True)
        assert got == whole, size


async def test_bad_rows_are_reported_with_their_line(env: Env) -> None:
    future = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = (
        "email,type,reason,stream,expires_at,created,note\n"  # synonyms for our columns
        'ok@example.com,hard,,,,,"spans\ntwo lines"\n'
        "not-an-address,hard,,,,,\n"
        "a@b@example.com,hard,,,,,\n"
        "user@nodot,hard,,,,,\n"
        "bad-outcome@example.com,bounced,,,,,\n"
        "bad-reason@example.com,hard,User Unknown!,,,,\n"
        "bad-stream@example.com,hard,,Not A Stream,,,\n"
        "bad-date@example.com,hard,,,tomorrow,,\n"
        f"future@example.com,hard,,,,{future},\n"
        "late@example.com,soft,,,2001-01-01T00:00:00Z,,\n"
    ).encode() + b"latin1-\xe9@example.com,hard,,,,,\n"
    summary = await do_import(env, body)
    assert summary_counts(summary) == {
        "rows": 11, "inserted": 1, "updated": 0, "unchanged": 0, "skipped": 1, "invalid": 9,
        "format": "stoplist",
    }  # fmt: skip
    errors = {e["line"]: (e["value"], e["reason"]) for e in summary["errors"]}
    assert errors[4] == ("not-an-address", "invalid address: not a valid email address")
    assert errors[5][0] == "a@b@example.com"
    assert errors[6] == (
        "user@nodot",
        "invalid address: domain has no dot (not an internet domain)",
    )
    assert errors[7][0] == "bounced" and errors[7][1].startswith("bad outcome")
    assert errors[8][0] == "User Unknown!" and errors[8][1].startswith("bad reason")
    assert errors[9][0] == "Not A Stream" and errors[9][1].startswith("bad stream")
    assert errors[10][0] == "tomorrow" and errors[10][1].startswith("bad date in expires_at")
    assert errors[11][1] == "bad date in created_at: in the future"
    assert errors[13] == ("latin1-\ufffd@example.com", "invalid address: not valid UTF-8")
    assert sorted(errors) == [4, 5, 6, 7, 8, 9, 10, 11, 13]


async def test_a_file_without_an_address_column_is_refused(env: Env) -> None:
    r = await env.client.post(
        IMPORT,
        content=b"name,phone\nAda,123\n",
        headers=env.auth("write") | {"content-type": "text/csv"},
    )
    assert r.status_code == 422
    assert "no address column" in r.json()["detail"]
    r = await env.client.post(
        IMPORT, content=b"x", params={"format": "nope"}, headers=env.auth("write")
    )
    assert r.status_code == 422


async def test_headerless_files_use_the_export_column_order(env: Env) -> None:
    summary = await do_import(env, b"a@example.com,complaint\nb@example.com\n")
    assert summary["inserted"] == 2
    assert [(r["address"], r["outcome"]) for r in await stored(env)] == [
        ("a@example.com", "complaint"),
        ("b@example.com", "manual"),
    ]


# ------------------------------------------------------------------------------ semantics


async def test_dry_run_counts_but_writes_nothing(env: Env) -> None:
    await do_import(env, b"address,outcome\nkept@example.com,soft\n")
    summary = await do_import(
        env, b"address,outcome\nkept@example.com,hard\nnew@example.com,hard\n", dry_run=True
    )
    assert summary_counts(summary) | {"committed": summary["committed"]} == {
        "rows": 2, "inserted": 1, "updated": 1, "unchanged": 0, "skipped": 0, "invalid": 0,
        "format": "stoplist", "committed": False,
    }  # fmt: skip
    assert [(r["address"], r["outcome"]) for r in await stored(env)] == [
        ("kept@example.com", "soft")
    ]
    check = await env.client.get(
        "/v1/check", params={"address": "new@example.com"}, headers=env.auth("check")
    )
    assert check.json()["suppressed"] is False


async def test_atomic_import_writes_nothing_when_a_row_is_bad(env: Env) -> None:
    body = b"address\nfirst@example.com\nbroken\nlast@example.com\n"
    summary = await do_import(env, body, atomic=True)
    assert (summary["committed"], summary["inserted"], summary["invalid"]) == (False, 0, 1)
    assert await stored(env) == []
    summary = await do_import(env, body)
    assert (summary["committed"], summary["inserted"], summary["invalid"]) == (True, 2, 1)
    good = b"address\nfirst@example.com\nthird@example.com\n"
    summary = await do_import(env, good, atomic=True)
    assert (summary["committed"], summary["inserted"], summary["unchanged"]) == (True, 1, 1)
    await assert_cache_matches_db(env, ["first@example.com", "third@example.com"])


async def test_the_same_file_twice_changes_nothing(env: Env) -> None:
    body = (SAMPLES / "stoplist-01.csv").read_bytes()
    first = await do_import(env, body)
    before = await stored(env)
    events = await count(env, Event)
    second = await do_import(env, body)
    assert first["inserted"] == 5
    assert (second["inserted"], second["updated"], second["unchanged"]) == (0, 0, 5)
    assert await stored(env) == before
    assert await count(env, Event) == events == 5
    async with env.services.db.read() as s:
        revisions = (await s.scalars(select(Suppression.revision))).all()
    assert set(revisions) == {1}


async def test_import_never_weakens_unless_overwrite(env: Env) -> None:
    headers = env.auth("write")
    await env.client.put(
        "/v1/suppressions/c@example.com", json={"outcome": "complaint"}, headers=headers
    )
    await env.client.put("/v1/suppressions/p@example.com", json={"reason": "x"}, headers=headers)
    soon = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    later = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await do_import(env, f"address,outcome,expires_at\ns@example.com,soft,{soon}\n".encode())
    body = (
        "address,outcome,reason,expires_at\n"
        "c@example.com,hard,user_unknown,\n"  # complaint stays
        f"p@example.com,manual,x,{later}\n"  # permanent never becomes expiry
        "s@example.com,hard,user_unknown,\n"  # soft becomes hard and permanent
    ).encode()
    summary = await do_import(env, body)
    assert (summary["inserted"], summary["updated"], summary["unchanged"]) == (0, 1, 2)
    rows = {r["address"]: r for r in await stored(env)}
    assert rows["c@example.com"]["outcome"] == "complaint"
    assert rows["p@example.com"]["expires_at"] is None
    assert (rows["s@example.com"]["outcome"], rows["s@example.com"]["expires_at"]) == ("hard", None)

    summary = await do_import(env, body, overwrite=True)
    assert (summary["inserted"], summary["updated"], summary["unchanged"]) == (0, 2, 1)
    rows = {r["address"]: r for r in await stored(env)}
    assert (rows["c@example.com"]["outcome"], rows["c@example.com"]["reason"]) == (
        "hard",
        "user_unknown",
    )
    assert rows["p@example.com"]["expires_at"] is not None
    await assert_cache_matches_db(env, sorted(rows))


async def test_removed_entries_come_back_fresh(env: Env) -> None:
    await do_import(env, b"address,outcome\nback@example.com,hard\n")
    r = await env.client.delete(
        "/v1/suppressions/back@example.com",
        params={"reason": "test run"},
        headers=env.auth("admin"),
    )
    assert r.status_code == 200, r.text
    summary = await do_import(env, b"address,outcome\nback@example.com,soft\n")
    assert summary["updated"] == 1
    (row,) = await stored(env)
    assert (row["outcome"], row["active"]) == ("soft", True)
    await assert_cache_matches_db(env, ["back@example.com"])


async def test_cache_answers_after_import(env: Env) -> None:
    await env.client.put(
        "/v1/suppressions/both@example.com",
        json={"outcome": "unsubscribe", "reason": "unsubscribe", "stream": "news"},
        headers=env.auth("write"),
    )
    await do_import(env, b"address,outcome,reason\nBoth@Example.com,hard,user_unknown\n")
    r = await env.client.post(
        "/v1/check",
        json={"addresses": ["both@example.com", "nobody@example.com"], "stream": "news"},
        headers=env.auth("check"),
    )
    hit, miss = r.json()["results"]
    assert (hit["suppressed"], hit["outcome"], hit["source"]) == (True, "hard", "import")
    assert miss["suppressed"] is False
    await assert_cache_matches_db(env, ["both@example.com"])


async def test_import_is_audited_with_the_key_and_counts(env: Env) -> None:
    await do_import(env, b"address\na@example.com\nnope\n", reason="legacy_list")
    async with env.services.db.read() as s:
        (entry,) = (await s.scalars(select(AuditEntry).where(AuditEntry.action == "import"))).all()
        events = (await s.scalars(select(Event).where(Event.kind == "import"))).all()
    assert entry.actor == "test-write"
    assert entry.reason == "legacy_list"
    assert {k: entry.detail[k] for k in ("rows", "inserted", "invalid")} == {
        "rows": 2,
        "inserted": 1,
        "invalid": 1,
    }
    assert [(e.address, e.reason, e.actor) for e in events] == [
        ("a@example.com", "legacy_list", "test-write")
    ]
    assert events[0].detail == {"import": entry.detail["import_id"]}


async def test_a_large_body_streams_in_batches(env: Env) -> None:
    rows = 30_000

    async def body() -> AsyncIterator[bytes]:
        yield b"address,outcome,reason,stream\n"
        for start in range(0, rows, 1000):
            yield "".join(
                f"user{i}@d{i % 97}.example.com,hard,user_unknown,{'s' if i % 3 else ''}\n"
                for i in range(start, start + 1000)
            ).encode()

    summary = await do_import(env, body())  # 1.3 MB, more than one batch of 10,000
    assert (summary["rows"], summary["inserted"]) == (rows, rows)
    assert await count(env, Suppression) == rows
    exported = [line.split(",")[0] for line in (await do_export(env)).splitlines()[1:]]
    assert exported == [f"user{i}@d{i % 97}.example.com" for i in range(rows)]  # file order
    await assert_cache_matches_db(
        env, [f"user{i}@d{i % 97}.example.com" for i in range(0, rows, 7)]
    )


async def test_cache_stays_consistent_with_concurrent_writes(env: Env) -> None:
    """Imports take row locks, not the per-address locks of single writes: the cache must still
    end up equal to the database when both touch the same addresses at once."""
    import asyncio

    from app.suppression import SuppressRequest

    addresses = [f"race{i}@example.com" for i in range(3000)]
    body = ("address,outcome\n" + "".join(f"{a},hard\n" for a in addresses)).encode()

    async def singles() -> None:
        for i, address in enumerate(addresses[::50]):
            await env.services.suppressions.suppress(
                SuppressRequest(
                    address=address,
                    outcome="unsubscribe" if i % 2 else "complaint",
                    reason="unsubscribe" if i % 2 else "complaint",
                    source="api",
                    stream="news" if i % 2 else None,
                )
            )

    await asyncio.gather(do_import(env, body), singles())
    await assert_cache_matches_db(env, addresses)


async def test_import_is_not_held_to_the_json_body_limit(env: Env) -> None:
    from app.http.middleware import MAX_BODY

    body = b"address,note\nok@example.com,\nbig@example.com," + b"x" * (MAX_BODY + 1) + b"\n"
    summary = await do_import(env, body)
    assert (summary["rows"], summary["inserted"], summary["invalid"]) == (2, 1, 1)
    assert summary["errors"][0]["line"] == 3
    assert summary["errors"][0]["reason"].startswith("unreadable CSV: field larger")


# ------------------------------------------------------------------------------ export


TRICKY = (
    "address,outcome,reason,stream,expires_at,created_at,note\n"
    "'-lead@example.com,hard,user_unknown,,,2024-01-02T03:04:05.000006Z,=HYPERLINK(\"x\")\n"
    "'=eq@example.com,complaint,complaint,,,2024-01-02T03:04:05Z,'@already quoted\n"
    "plain@example.com,unsubscribe,unsubscribe,news,,2024-01-02T03:04:05Z,'+1\n"
    'plain@example.com,soft,mailbox_full,,2099-01-01T00:00:00Z,2024-01-02T03:04:05Z,"tab\tand ""quotes"", comma"\n'
    "other@example.net,manual,manual,,,2024-01-02T03:04:05Z,'''=twice\n"
    "x@example.org,manual,manual,,,2024-01-02T03:04:05Z,-\n"
)  # fmt: skip


async def test_export_neutralises_formula_cells_and_import_reads_them_back(env: Env) -> None:
    await do_import(env, TRICKY.encode())
    notes = {(r["address"], r["scope"]): r["note"] for r in await stored(env)}
    assert notes[("-lead@example.com", "global")] == '=HYPERLINK("x")'
    assert notes[("=eq@example.com", "global")] == "@already quoted"
    assert notes[("plain@example.com", "news")] == "+1"
    assert notes[("other@example.net", "global")] == "''=twice"
    assert notes[("x@example.org", "global")] == "-"
    text = await do_export(env)
    for line in text.splitlines()[1:]:
        for cell in line.split(","):
            assert cell[:1] not in ("=", "+", "-", "@", "\t", "\r"), line
    assert "'=HYPERLINK" in text and "'''=twice" in text


async def test_round_trip_is_byte_identical(env: Env) -> None:
    await do_import(env, TRICKY.encode())
    await do_import(env, (SAMPLES / "stoplist-01.csv").read_bytes())
    await do_import(env, (SAMPLES / "postmark-01.csv").read_bytes())
    first = await do_export(env)
    assert first.count("\n") > 10
    async with env.services.db.write() as s:
        for model in (Suppression, Event, AuditEntry):
            await s.execute(model.__table__.delete())  # type: ignore[attr-defined]
    summary = await do_import(env, first.encode())
    assert summary["invalid"] == 0
    assert await do_export(env) == first


async def test_export_filters(env: Env) -> None:
    await do_import(env, (SAMPLES / "stoplist-01.csv").read_bytes())
    await do_import(env, b"address,outcome,reason\nlate@other.example,hard,user_unknown\n")

    async def addresses(**params: Any) -> list[str]:
        return [line.split(",")[0] for line in (await do_export(env, **params)).splitlines()[1:]]

    everything = await addresses()
    assert len(everything) == 6
    assert await addresses(outcome="hard") == ["gone@example.com", "late@other.example"]
    assert await addresses(reason="mailbox_full") == ["full@example.com"]
    assert await addresses(stream="newsletter") == ["reader@example.org"]
    assert await addresses(domain="Example.COM") == [
        "gone@example.com",
        "full@example.com",
        "'-dash@example.com",
    ]
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    assert len(await addresses(since=since)) == 6
    assert await addresses(since="2999-01-01T00:00:00Z") == []
    r = await env.client.get(EXPORT, params={"outcome": "bogus"}, headers=env.auth("read"))
    assert r.status_code == 422


async def test_hashed_export(env: Env) -> None:
    await do_import(env, b"address\nSomeone@Example.com\n")
    text = await do_export(env, hashed=True)
    header, row = text.splitlines()
    assert header.startswith("address_sha256,outcome,")
    assert row.split(",")[0] == hashlib.sha256(b"someone@example.com").hexdigest()


# ------------------------------------------------------------------------------ CLI


async def test_import_function_reads_a_gzip_file(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "list.csv.gz"
    path.write_bytes(gzip.compress((SAMPLES / "ses-01.csv").read_bytes()))
    seen: list[int] = []
    summary = await bulk.import_csv(
        env.services.suppressions,
        bulk.gunzip_if_needed(bulk.file_chunks(str(path), on_read=seen.append)),
        bulk.ImportOptions(),
        actor="cli",
        progress=lambda s: None,
    )
    assert (summary.format, summary.inserted, summary.committed) == ("ses", 3, True)
    assert seen == [path.stat().st_size]


def test_cli_import_and_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.cli import app

    runner = CliRunner()
    monkeypatch.setenv("STOPLIST_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.delenv("STOPLIST_REDIS_URL", raising=False)
    assert runner.invoke(app, ["migrate"]).exit_code == 0
    source = SAMPLES / "stoplist-01.csv"
    result = runner.invoke(app, ["import", str(source), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert set(summary) == set(bulk.ImportSummary().as_dict())
    assert summary["inserted"] == 5
    result = runner.invoke(app, ["import", str(source), "--dry-run"])
    assert result.exit_code == 0 and "5 unchanged" in result.output, result.output
    bad = tmp_path / "bad.csv"
    bad.write_text("address\nnope\n")
    result = runner.invoke(app, ["import", str(bad), "--atomic"])
    assert result.exit_code == 1 and "line 2" in result.output, result.output
    out = tmp_path / "out.csv"
    result = runner.invoke(app, ["export", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == source.read_bytes()
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["export", "--out", "-"])  # - is standard output, not a file
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == source.read_bytes()
    assert not (tmp_path / "-").exists()
    result = runner.invoke(app, ["export", "--outcome", "hard", "--hashed"])
    assert result.exit_code == 0
    assert result.output.splitlines()[1].startswith(hashlib.sha256(b"gone@example.com").hexdigest())


# ------------------------------------------------------------------------------ helpers


@pytest.mark.parametrize(
    "cell", ["", "a", "=1", "'=1", "''=1", "'a", "'", "-", "@x", "\tx", "\rx", "+", "x=1"]
)
def test_neutralise_is_undone_exactly(cell: str) -> None:
    out = bulk.neutralise(cell)
    assert out[:1] not in ("=", "+", "-", "@", "\t", "\r")
    assert bulk.unneutralise(out) == cell


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00.000000Z"),
        ("2024-05-01 14:00:00+02:00", "2024-05-01T12:00:00.000000Z"),
        ("2024-05-01", "2024-05-01T00:00:00.000000Z"),
        ("1714564800", "2024-05-01T12:00:00.000000Z"),
        ("1714564800000", "2024-05-01T12:00:00.000000Z"),
        ("Wed, 01 May 2024 12:00:00 GMT", "2024-05-01T12:00:00.000000Z"),
    ],
)
def test_parse_time(raw: str, expected: str) -> None:
    assert bulk.format_time(bulk.parse_time(raw)) == expected


async def test_domain_entries_survive_export_and_import(env: Env) -> None:
    """The export writes a whole-domain entry as "@domain" (neutralised as "'@domain"); importing
    it back makes the same domain entry, and a check of any address there is blocked again."""
    r = await env.client.put(
        "/v1/domain-suppressions/Bücher.Example",
        json={"reason": "customer_request", "stream": "news", "note": "whole domain"},
        headers=env.auth("write"),
    )
    assert r.status_code == 200, r.text
    await do_import(env, (SAMPLES / "stoplist-01.csv").read_bytes())
    first = await do_export(env)
    assert "'@xn--bcher-kva.example,manual,customer_request,news," in first
    async with env.services.db.write() as s:
        for model in (Suppression, Event, AuditEntry):
            await s.execute(model.__table__.delete())  # type: ignore[attr-defined]
    key = "@xn--bcher-kva.example"
    assert await env.services.suppressions.entries_from_db([key]) == [None]
    summary = await do_import(env, first.encode())
    assert summary["invalid"] == 0, summary
    assert await do_export(env) == first
    [entries] = await env.services.suppressions.entries_from_db([key])
    assert entries and [(e.scope, e.reason) for e in entries] == [("news", "customer_request")]
    await assert_cache_matches_db(env, [key])
    blocked = {"address": "a@bücher.example", "stream": "news"}
    r = await env.client.get("/v1/check", params=blocked, headers=env.auth("check"))
    assert r.json()["suppressed"] is True and r.json()["reason"] == "customer_request"
    # Unnormalised domains are accepted; what is not a domain is reported with its line.
    summary = await do_import(
        env, b"address,reason\n@Example.ORG,spam_trap\n@not a domain,x\n@,x\n"
    )
    assert [(e["line"], e["value"]) for e in summary["errors"]] == [
        (3, "@not a domain"),
        (4, "@"),
    ]
    assert "@example.org" in {row["address"] for row in await stored(env)}
