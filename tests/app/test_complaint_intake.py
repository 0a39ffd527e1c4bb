"""Complaints and mailto unsubscribes through the real SMTP sink, end to end to the check."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import SecretStr

from app.intake.parse_pool import ParsingPool
from tests.app.test_policy import KEYS, configure
from tests.app.test_smtp import SINK_DOMAINS, send, start_sink, wait_for
from tests.conftest import Env

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


async def _suppressed(env: Env, address: str, stream: str | None = None) -> dict[str, object]:
    params = {"address": address} | ({"stream": stream} if stream else {})
    r = await env.client.get("/v1/check", params=params, headers=env.auth("check"))
    assert r.status_code == 200
    answer: dict[str, object] = r.json()
    return answer


async def test_complaint_mail_suppresses_its_recipient(env: Env, parse_pool: ParsingPool) -> None:
    """An RFC 5965 abuse report mailed to the feedback address blocks the complained-of address."""
    # On the wire, as an MTA relays it: CRLF lines.
    raw = (SAMPLES / "arf" / "rfc5965-01.eml").read_bytes().replace(b"\n", b"\r\n")
    s = await start_sink(env, parse_pool, process=True)
    try:
        assert (await _suppressed(env, "alice@example.com"))["suppressed"] is False
        code, msg = await asyncio.to_thread(send, s.port, raw, ["fbl@example.org"])
        assert code == 250, msg

        async def done() -> bool:
            return bool((await _suppressed(env, "alice@example.com"))["suppressed"])

        await wait_for(done)
        answer = await _suppressed(env, "alice@example.com", "transactional")
        assert (answer["outcome"], answer["scope"]) == ("complaint", "global")
    finally:
        await s.stop()


async def test_mailto_unsubscribe_over_smtp_is_stream_scoped(
    env: Env, parse_pool: ParsingPool
) -> None:
    signer = configure(env)
    rcpt = signer.unsubscribe_mailto_address("yves@example.com", "newsletter")
    raw = b"From: yves@example.com\r\nTo: x\r\nSubject: unsubscribe\r\n\r\nunsubscribe\r\n"
    s = await start_sink(
        env,
        parse_pool,
        process=True,
        smtp_domains=[*SINK_DOMAINS, "unsubscribe.example.net"],
        signing_keys=SecretStr(KEYS),
        unsubscribe_domain="unsubscribe.example.net",
        return_path_domain="bounces.example.net",
    )
    try:
        code, _ = await asyncio.to_thread(send, s.port, raw, [rcpt])
        assert code == 250

        async def done() -> bool:
            return bool((await _suppressed(env, "yves@example.com", "newsletter"))["suppressed"])

        await wait_for(done)
        answer = await _suppressed(env, "yves@example.com", "newsletter")
        assert (answer["outcome"], answer["scope"]) == ("unsubscribe", "newsletter")
        assert (await _suppressed(env, "yves@example.com", "transactional"))["suppressed"] is False
    finally:
        await s.stop()
