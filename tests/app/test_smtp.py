"""The SMTP sink, driven through a real server on loopback with ``smtplib`` (and a raw socket where
smtplib would tidy up what we want to send)."""

from __future__ import annotations

import asyncio
import dataclasses
import smtplib
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from app.container import build_services
from app.intake import Intake, StoreResult
from app.intake.parse_pool import ParsingPool
from app.intake.smtp import Reply, SmtpSink
from app.models import InboundMessage
from app.settings import Settings
from tests.conftest import Env

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SINK_DOMAINS = ["bounces.example.net", "fbl@example.org"]


def sample(name: str) -> bytes:
    """A sample with CRLF line ends, as an MTA sends it."""
    data = (SAMPLES / name).read_bytes()
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


HARD_BOUNCE = sample("bounce/postfix-01.eml")


def nested_bomb(depth: int = 1000) -> bytes:
    parts = [
        b"From: MAILER-DAEMON@example.com\r\nTo: b@bounces.example.net\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
    ]
    for i in range(depth):
        parts.append(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i))
    parts.append(b"Content-Type: text/plain\r\n\r\nhi\r\n")
    parts.extend(b"--b%d--\r\n" % i for i in reversed(range(depth)))
    return b"".join(parts)


def folded_header_bomb(size: int = 40_000) -> bytes:
    folds = b"".join(b"\r\n y%d" % i for i in range(size // 6))
    return (
        b"From: MAILER-DAEMON@example.com\r\nTo: b@bounces.example.net\r\n"
        b"Subject: Undelivered" + folds + b"\r\n\r\nbody\r\n"
    )


@dataclass
class Sink:
    settings: Settings
    intake: Intake
    sink: SmtpSink

    @property
    def port(self) -> int:
        return self.sink.port

    def client(self, timeout: float = 10.0) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, timeout=timeout)

    async def stop(self) -> None:
        await self.sink.stop()
        await self.intake.close()


async def start_sink(
    env: Env, pool: ParsingPool | None = None, *, process: bool = False, **overrides: Any
) -> Sink:
    values: dict[str, Any] = {"smtp_port": 0, "smtp_domains": SINK_DOMAINS, "parse_workers": 1}
    values.update(overrides)
    settings = env.settings.model_copy(update=values)
    services = dataclasses.replace(env.services, settings=settings)
    intake = Intake(services, pool=pool)
    if process:
        await intake.processor.start()
    sink = SmtpSink(settings, intake)
    await sink.start()
    return Sink(settings, intake, sink)


@pytest_asyncio.fixture(loop_scope="session")
async def sink(env: Env) -> AsyncIterator[Sink]:
    s = await start_sink(env)
    yield s
    await s.stop()


async def rows(env: Env) -> list[InboundMessage]:
    async with env.services.db.read() as session:
        return list(
            (await session.execute(select(InboundMessage).order_by(InboundMessage.id))).scalars()
        )


async def wait_for(pred: Callable[[], Any], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def send(port: int, raw: bytes, rcpts: list[str] | None = None, mail_from: str = "") -> Any:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        code, msg = c.ehlo("mta.example.com")
        assert code == 250
        c.mail(mail_from)
        for r in rcpts or ["bounce+carol=example.net@bounces.example.net"]:
            code, msg = c.rcpt(r)
            assert code == 250, msg
        return c.data(raw)


# ---------------------------------------------------------------------------------- accepting


async def test_accepted_message_is_committed_before_250(env: Env, sink: Sink) -> None:
    code, msg = await asyncio.to_thread(send, sink.port, HARD_BOUNCE)
    assert (code, msg.decode()) == (250, Reply.ACCEPTED[4:])
    # The processor is not running: whatever is in the table was written before the reply.
    [row] = await rows(env)
    assert row.raw == HARD_BOUNCE  # bytes untouched (the dot-stuffing undone, nothing else)
    assert row.rcpt_to == ["bounce+carol=example.net@bounces.example.net"]
    assert row.mail_from == ""
    assert row.peer == "127.0.0.1"
    assert row.state == "pending"
    assert row.size == len(HARD_BOUNCE)


async def test_address_entries_accept_only_that_address(env: Env, sink: Sink) -> None:
    def go() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        with sink.client() as c:
            c.ehlo()
            c.mail("")
            return c.rcpt("FBL@example.org"), c.rcpt("other@example.org")

    ok, refused = await asyncio.to_thread(go)
    assert ok[0] == 250
    assert refused == (550, Reply.RELAY_DENIED[4:].encode())


async def test_relay_refused(env: Env, sink: Sink) -> None:
    def go() -> tuple[int, bytes]:
        with sink.client() as c:
            c.ehlo()
            c.mail("someone@example.com")
            return c.rcpt("victim@gmail.example")

    assert await asyncio.to_thread(go) == (550, Reply.RELAY_DENIED[4:].encode())

    def sendmail(rcpt: str) -> Any:
        with sink.client() as c:
            return c.sendmail("", [rcpt], HARD_BOUNCE)

    for lookalike in (
        "a@bounces.example.net.evil.example",
        "a@evil-bounces.example.net",
        "a@b@bounces",
    ):
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            await asyncio.to_thread(sendmail, lookalike)
    assert await rows(env) == []


async def test_too_many_recipients(env: Env) -> None:
    s = await start_sink(env, smtp_max_recipients=2)
    try:

        def go() -> list[tuple[int, bytes]]:
            with s.client() as c:
                c.ehlo()
                c.mail("")
                return [c.rcpt(f"r{i}@bounces.example.net") for i in range(3)]

        replies = await asyncio.to_thread(go)
        assert [r[0] for r in replies] == [250, 250, 452]
        assert replies[2][1] == Reply.TOO_MANY_RECIPIENTS[4:].encode()
    finally:
        await s.stop()


async def test_too_big(env: Env) -> None:
    s = await start_sink(env, smtp_max_message_bytes=4096)
    big = HARD_BOUNCE + b"X" * 70 + b"\r\n" * 1 + (b"Y" * 70 + b"\r\n") * 100

    def without_size() -> tuple[int, bytes]:
        # HELO: no SIZE parameter on MAIL, so the limit bites while reading DATA.
        with s.client() as c:
            c.helo("mta.example.com")
            c.mail("")
            c.rcpt("b@bounces.example.net")
            return c.data(big)

    def with_size() -> tuple[int, bytes]:
        with s.client() as c:
            c.ehlo("mta.example.com")
            assert c.has_extn("size") and int(c.esmtp_features["size"]) == 4096
            return c.mail("", [f"SIZE={len(big)}"])

    try:
        assert await asyncio.to_thread(without_size) == (552, Reply.TOO_BIG[4:].encode())
        assert await asyncio.to_thread(with_size) == (552, Reply.TOO_BIG[4:].encode())
        assert await rows(env) == []
    finally:
        await s.stop()


async def test_duplicate_delivery_is_stored_once(env: Env, sink: Sink) -> None:
    first = await asyncio.to_thread(send, sink.port, HARD_BOUNCE)
    again = await asyncio.to_thread(send, sink.port, HARD_BOUNCE)
    other_rcpt = await asyncio.to_thread(send, sink.port, HARD_BOUNCE, ["x@bounces.example.net"])
    assert first == (250, Reply.ACCEPTED[4:].encode())
    assert again == (250, Reply.DUPLICATE[4:].encode())
    assert other_rcpt[0] == 250
    assert len(await rows(env)) == 2  # a different envelope is a different delivery


# ---------------------------------------------------------------------------------- group commit


class HeldCommits:
    """Wraps the sink's ``store_many``: each commit waits for ``gate``, then runs (or fails with
    ``fail``); records the size of every commit and the bytes of those that returned."""

    def __init__(self, s: Sink, monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> None:
        self.committer = s.intake.committer
        self.real = self.committer.store.store_many
        self.gate = asyncio.Event()
        self.fail = fail
        self.sizes: list[int] = []
        self.committed: set[bytes] = set()
        monkeypatch.setattr(self.committer.store, "store_many", self.store_many)

    async def store_many(self, messages: Any) -> list[StoreResult]:
        self.sizes.append(len(messages))
        await self.gate.wait()
        if self.fail:
            raise OperationalError("INSERT", {}, ConnectionResetError("commit failed"))
        results = await self.real(messages)
        self.committed.update(m.raw for m in messages)
        return results

    async def until_waiting(self, n: int) -> None:
        async def queued() -> bool:
            return bool(self.sizes) and len(self.committer._waiting) >= n

        await wait_for(queued, timeout=10)


def send_and_check(port: int, raw: bytes, held: HeldCommits) -> tuple[int, bytes, bool]:
    """(code, text, whether the commit holding the message had returned when the reply came)."""
    code, text = send(port, raw)
    return code, text, raw in held.committed


async def test_sessions_finishing_together_share_one_commit(
    env: Env, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldCommits(sink, monkeypatch)
    raws = [HARD_BOUNCE + b"group-%d\r\n" % i for i in range(6)]
    first = asyncio.create_task(asyncio.to_thread(send_and_check, sink.port, raws[0], held))
    await held.until_waiting(0)  # the first commit is in flight, held at the gate
    rest = [
        asyncio.create_task(asyncio.to_thread(send_and_check, sink.port, raw, held))
        for raw in raws[1:]
    ]
    await held.until_waiting(5)  # the others wait for the next commit, unanswered
    assert not any(t.done() for t in [first, *rest])
    held.gate.set()
    replies = await asyncio.gather(first, *rest)
    # Every session got its 250 only once the commit holding its message had returned.
    assert all(r == (250, Reply.ACCEPTED[4:].encode(), True) for r in replies), replies
    assert held.sizes == [1, 5]  # five sessions, one INSERT and one COMMIT
    assert sorted(bytes(r.raw or b"") for r in await rows(env)) == sorted(raws)


async def test_failed_group_commit_answers_451_to_every_session(
    env: Env, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldCommits(sink, monkeypatch, fail=True)
    raws = [HARD_BOUNCE + b"doomed-%d\r\n" % i for i in range(4)]
    first = asyncio.create_task(asyncio.to_thread(send_and_check, sink.port, raws[0], held))
    await held.until_waiting(0)
    rest = [
        asyncio.create_task(asyncio.to_thread(send_and_check, sink.port, raw, held))
        for raw in raws[1:]
    ]
    await held.until_waiting(3)
    held.gate.set()
    replies = await asyncio.gather(first, *rest)
    assert all(r == (451, Reply.TEMPORARY[4:].encode(), False) for r in replies), replies
    assert 3 in held.sizes  # the three waiting sessions were one commit (tried twice), all 451
    assert await rows(env) == []
    # The sink recovers with the database: the MTA's retry is stored.
    monkeypatch.undo()
    assert (await asyncio.to_thread(send, sink.port, raws[0]))[0] == 250
    assert len(await rows(env)) == 1


async def test_same_message_twice_in_one_commit_is_stored_once(
    env: Env, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldCommits(sink, monkeypatch)
    primer = asyncio.create_task(asyncio.to_thread(send, sink.port, HARD_BOUNCE + b"primer\r\n"))
    await held.until_waiting(0)
    twins = [asyncio.create_task(asyncio.to_thread(send, sink.port, HARD_BOUNCE)) for _ in "ab"]
    await held.until_waiting(2)
    held.gate.set()
    await primer
    replies = sorted(t.decode() for _, t in await asyncio.gather(*twins))
    assert replies == sorted([Reply.ACCEPTED[4:], Reply.DUPLICATE[4:]])
    assert held.sizes == [1, 2]
    assert len(await rows(env)) == 2


async def test_bare_lf_and_cr_dots_do_not_end_data(env: Env, sink: Sink) -> None:
    """SMTP smuggling: only <CRLF>.<CRLF> ends DATA; what follows a bare-LF or bare-CR dot is
    message content, never a second transaction."""
    smuggled = (
        b"From: MAILER-DAEMON@example.com\r\nSubject: hello\r\n\r\nbody\r\n"
        b"\n.\nMAIL FROM:<admin@example.com>\nRCPT TO:<b@bounces.example.net>\nDATA\nsmuggled-1\n"
        b"\r.\rMAIL FROM:<admin@example.com>\rRCPT TO:<b@bounces.example.net>\rDATA\rsmuggled-2\r"
        b"\r\n.\r\n"
    )

    def go() -> bytes:
        with socket.create_connection(("127.0.0.1", sink.port), timeout=10) as sock:
            f = sock.makefile("rb")

            def reply() -> bytes:
                lines = []
                while True:
                    line = f.readline()
                    lines.append(line)
                    if line[3:4] != b"-":
                        return b"".join(lines)

            assert reply().startswith(b"220")
            for cmd in (
                b"HELO mta.example.com",
                b"MAIL FROM:<>",
                b"RCPT TO:<b@bounces.example.net>",
            ):
                sock.sendall(cmd + b"\r\n")
                assert reply().startswith(b"250"), cmd
            sock.sendall(b"DATA\r\n")
            assert reply().startswith(b"354")
            sock.sendall(smuggled)
            first = reply()
            sock.sendall(b"QUIT\r\n")
            rest = f.read()
            return first + rest

    transcript = await asyncio.to_thread(go)
    assert transcript.count(b"250 ") == 1, transcript
    assert transcript.rstrip().endswith(b"221 Bye")
    [row] = await rows(env)
    assert row.raw is not None
    assert b"smuggled-1" in row.raw and b"smuggled-2" in row.raw
    assert row.mail_from == ""


# ---------------------------------------------------------------------------------- failures


async def test_storage_down_answers_451(env: Env) -> None:
    dead = env.settings.model_copy(
        update={
            "database_url": "postgresql+asyncpg://postgres@127.0.0.1:1/test",
            "database_timeout_s": 1.0,
        }
    )
    services = build_services(dead)
    settings = dead.model_copy(update={"smtp_port": 0, "smtp_domains": SINK_DOMAINS})
    intake = Intake(dataclasses.replace(services, settings=settings))
    s = SmtpSink(settings, intake)
    await s.start()
    try:
        reply = await asyncio.to_thread(send, s.port, HARD_BOUNCE)
        assert reply == (451, Reply.TEMPORARY[4:].encode())
    finally:
        await s.stop()
        await services.cache.close()
        await services.db.dispose()


async def test_slow_storage_answers_451(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    s = await start_sink(env, smtp_storage_timeout_s=0.2)

    async def slow_store(messages: Any) -> list[StoreResult]:
        await asyncio.sleep(2)
        raise AssertionError("the session is answered before this returns")

    monkeypatch.setattr(s.intake.committer.store, "store_many", slow_store)
    try:
        started = time.monotonic()
        assert (await asyncio.to_thread(send, s.port, HARD_BOUNCE))[0] == 451
        assert time.monotonic() - started < 1.5
    finally:
        await s.stop()


async def test_handler_exception_is_a_fixed_451_not_500(
    env: Env, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def boom(**_: Any) -> StoreResult:
        raise RuntimeError("internal secret: /var/lib/stoplist")

    monkeypatch.setattr(sink.intake, "accept", boom)
    reply = await asyncio.to_thread(send, sink.port, HARD_BOUNCE)
    assert reply == (451, b"4.3.0 Temporary local problem")

    # The session survives and the next transaction is unaffected.
    monkeypatch.undo()
    assert (await asyncio.to_thread(send, sink.port, HARD_BOUNCE))[0] == 250


async def test_connection_cap_answers_421(env: Env) -> None:
    s = await start_sink(env, smtp_max_connections=2)

    def go() -> tuple[int, bytes, int]:
        a, b = s.client(), s.client()
        try:
            with pytest.raises(smtplib.SMTPConnectError) as info:
                s.client()
        finally:
            a.quit()
        # A slot freed is a slot usable again.
        time.sleep(0.1)
        with s.client() as c:
            code = c.noop()[0]
        b.quit()
        return info.value.smtp_code, info.value.smtp_error, code

    try:
        code, text, after = await asyncio.to_thread(go)
        assert (code, text) == (421, Reply.TOO_MANY_CONNECTIONS[4:].encode())
        assert after == 250
        await asyncio.sleep(0.1)
        assert s.sink.connections == 0
    finally:
        await s.stop()


async def test_network_allow_list(env: Env) -> None:
    s = await start_sink(env, smtp_allowed_networks=["192.0.2.0/24"])
    try:
        with pytest.raises(smtplib.SMTPConnectError) as info:
            await asyncio.to_thread(s.client)
        assert info.value.smtp_code == 554
    finally:
        await s.stop()
    s = await start_sink(env, smtp_allowed_networks=["127.0.0.0/8"])
    try:
        assert (await asyncio.to_thread(send, s.port, HARD_BOUNCE))[0] == 250
    finally:
        await s.stop()


async def test_idle_timeout_closes_with_421(env: Env) -> None:
    s = await start_sink(env, smtp_timeout_s=0.3)

    def go() -> bytes:
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
            f = sock.makefile("rb")
            assert f.readline().startswith(b"220")
            return f.read()  # nothing sent: the server speaks, then closes

    try:
        assert (await asyncio.to_thread(go)).startswith(b"421 4.4.2")
    finally:
        await s.stop()


async def test_starttls(env: Env, tmp_path: Path) -> None:
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        capture_output=True,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip("openssl cannot make a test certificate here")
    s = await start_sink(env, smtp_tls_cert=cert, smtp_tls_key=key)

    def go() -> tuple[int, bytes]:
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False
        with s.client() as c:
            c.ehlo()
            assert c.has_extn("starttls")
            c.starttls(context=ctx)
            c.ehlo()
            c.mail("")
            c.rcpt("b@bounces.example.net")
            return c.data(HARD_BOUNCE)

    try:
        assert (await asyncio.to_thread(go))[0] == 250
        assert len(await rows(env)) == 1
    finally:
        await s.stop()


# ---------------------------------------------------------------------------------- processing


async def test_crash_after_250_is_processed_after_restart(
    env: Env, parse_pool: ParsingPool
) -> None:
    first = await start_sink(env)  # stores, does not process: as if it died right after the 250
    await asyncio.to_thread(send, first.port, HARD_BOUNCE)
    await first.stop()
    [row] = await rows(env)
    assert row.state == "pending"

    second = await start_sink(env, parse_pool, process=True)  # a new service instance
    try:

        async def done() -> bool:
            return (await rows(env))[0].state != "pending"

        await wait_for(done)
        [row] = await rows(env)
        assert row.state == "processed"
        assert row.kind == "bounce"
        assert row.attempts == 1
        assert row.claimed_at is None and row.claimed_by is None
        assert row.summary is not None
        assert row.summary["results"][0]["recipient"] == "carol@example.net"
        assert row.summary["results"][0]["outcome"] == "hard"
    finally:
        await second.stop()


async def test_parser_bomb_is_isolated(env: Env, parse_pool: ParsingPool) -> None:
    s = await start_sink(env, parse_pool, process=True)
    try:
        started = time.monotonic()
        for bomb in (nested_bomb(), folded_header_bomb()):
            assert (await asyncio.to_thread(send, s.port, bomb))[0] == 250
        assert time.monotonic() - started < 2.0

        def noop_time() -> float:
            with s.client() as c:
                t = time.perf_counter()
                assert c.noop()[0] == 250
                return time.perf_counter() - t

        # Meanwhile the bombs are being parsed: other sessions still get quick answers.
        assert max([await asyncio.to_thread(noop_time) for _ in range(5)]) < 0.25

        async def finished() -> bool:
            return all(r.state != "pending" for r in await rows(env))

        await wait_for(finished, timeout=30)
        for row in await rows(env):
            # Parsed safely or refused with a reason, never stuck and never pending.
            assert row.state in ("processed", "ignored", "failed")
            assert (row.state == "failed") == bool(row.error)
    finally:
        await s.stop()


async def test_not_a_bounce_is_ignored(env: Env, parse_pool: ParsingPool) -> None:
    s = await start_sink(env, parse_pool, process=True)
    try:
        await asyncio.to_thread(send, s.port, sample("negative/autoreply-01.eml"))

        async def finished() -> bool:
            return all(r.state != "pending" for r in await rows(env))

        await wait_for(finished)
        [row] = await rows(env)
        assert (row.state, row.kind) == ("ignored", "auto_reply")
    finally:
        await s.stop()


async def test_hard_bounce_end_to_end_suppresses(env: Env, parse_pool: ParsingPool) -> None:
    """A hard-bounce DSN sent to the sink ends as a suppression the pre-send check reports."""
    s = await start_sink(env, parse_pool, process=True)
    try:
        check = {"params": {"address": "carol@example.net"}, "headers": env.auth("check")}
        before = (await env.client.get("/v1/check", **check)).json()
        assert before["suppressed"] is False

        assert (await asyncio.to_thread(send, s.port, HARD_BOUNCE))[0] == 250

        async def suppressed() -> bool:
            answer = (await env.client.get("/v1/check", **check)).json()
            return bool(answer["suppressed"])

        await wait_for(suppressed)
        answer = (await env.client.get("/v1/check", **check)).json()
        assert answer["outcome"] == "hard"
        assert answer["scope"] == "global"

        # The suppression is committed before the message's row is finished: wait for the row.
        async def finished() -> bool:
            return all(r.state != "pending" for r in await rows(env))

        await wait_for(finished)
        [row] = await rows(env)
        assert row.state == "processed"
        assert row.summary is not None and row.summary["applied"] == 1
    finally:
        await s.stop()


def _sample_value(text: str, name: str, labels: str = "") -> float:
    for line in text.splitlines():
        if line.startswith(name + labels + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{labels} not in /metrics")


async def test_metrics_show_accepted_mail_and_the_backlog(env: Env, sink: Sink) -> None:
    """What an operator alerts on: messages the sink accepted, replies by code, and the stored
    messages still waiting to be processed (this sink's processor is not running)."""
    from app.http.routes import health

    async def scrape() -> str:
        health._gauge_refreshed = 0.0  # the gauges are refreshed at most every 15 s
        r = await env.client.get("/metrics", headers=env.auth("check"))
        assert r.status_code == 200
        return r.text

    before = await scrape()
    accepted = (
        _sample_value(before, "stoplist_smtp_messages_total", '{result="accepted"}')
        if ('stoplist_smtp_messages_total{result="accepted"}' in before)
        else 0.0
    )
    assert (await asyncio.to_thread(send, sink.port, HARD_BOUNCE))[0] == 250
    await asyncio.sleep(0.05)  # pending for a little while
    after = await scrape()
    assert (
        _sample_value(after, "stoplist_smtp_messages_total", '{result="accepted"}') == accepted + 1
    )
    assert _sample_value(after, "stoplist_smtp_replies_total", '{code="250"}') >= 4
    assert _sample_value(after, "stoplist_intake_messages", '{state="pending"}') == 1
    assert _sample_value(after, "stoplist_intake_messages", '{state="failed"}') == 0
    assert 0 < _sample_value(after, "stoplist_intake_oldest_pending_seconds") < 60


async def test_aiosmtpd_logs_no_addresses_at_info(
    env: Env, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    """aiosmtpd's mail.log would write sender and recipients at INFO for every message."""
    import logging

    with caplog.at_level(logging.INFO):
        code, _ = await asyncio.to_thread(send, sink.port, HARD_BOUNCE)
        assert code == 250
    assert [r.getMessage() for r in caplog.records if r.name == "mail.log"] == []
