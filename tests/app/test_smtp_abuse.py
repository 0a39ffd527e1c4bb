"""Hostile clients against the real SMTP sink on loopback: parser bombs end to end, NUL bytes in
report fields, STARTTLS command injection (CVE-2011-0411), NOOP / junk / error floods, slow
trickles (RFC 5321 §4.5.3.2 timeouts, a session deadline); the sink's bulk DATA reader against
aiosmtpd's own on a live server; parser bugs in the parse pool.

Every test drives a real server with a real client (``smtplib``, or a raw socket where smtplib
would tidy up what a hostile client sends). Tests that only exercise the SMTP protocol run on the
embedded default (SQLite); those that store and process messages run on both stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import random
import select
import smtplib
import socket
import ssl
import subprocess
import threading
import time
import unittest.mock
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiosmtpd.smtp import SMTP
from sqlalchemy import select as sa_select

from app.intake import StoreResult
from app.intake.parse_pool import ParsingPool
from app.intake.smtp import COMMAND_SLACK, MAX_ERRORS, Reply, read_data
from app.models import Event
from dsn.analysis import analyse_message
from dsn.model import MessageAnalysis
from tests.app.test_smtp import SAMPLES, Sink, rows, send, start_sink, wait_for
from tests.conftest import Env

RCPT = b"b@bounces.example.net"


# ---------------------------------------------------------------------------------- raw client


class RawClient:
    """A line-level SMTP client over a plain socket: says exactly what a hostile client says."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def reply(self) -> bytes:
        """One whole reply (every line of a multi-line one)."""
        lines: list[bytes] = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("closed: " + repr(b"".join(lines)))
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)

    def cmd(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def rest(self) -> bytes:
        """Everything the server still says until it closes the connection."""
        return self.file.read()

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def transaction(port: int, content: bytes) -> tuple[bytes, float]:
    """HELO, MAIL, RCPT, DATA and ``content`` exactly as given (no line-end repair, which smtplib
    would do); returns the reply to the end of data and the seconds from the first content byte
    sent to that reply."""
    assert not content.startswith(b".") and b"\r\n." not in content  # no dot-stuffing needed
    with RawClient(port) as c:
        assert c.reply().startswith(b"220")
        for line in (b"HELO mta.example.com", b"MAIL FROM:<>", b"RCPT TO:<" + RCPT + b">"):
            assert c.cmd(line).startswith(b"250"), line
        assert c.cmd(b"DATA").startswith(b"354")
        started = time.perf_counter()
        end = b".\r\n" if content.endswith(b"\r\n") else b"\r\n.\r\n"
        c.sock.sendall(content + end)
        answer = c.reply()
        elapsed = time.perf_counter() - started
        assert c.cmd(b"QUIT").startswith(b"221")
        return answer, elapsed


class NoopProbe:
    """Another client, in a thread, timing NOOPs on fresh sessions (each session stays well
    inside the per-session command budget) until stopped; ``worst`` is the slowest answer."""

    def __init__(self, port: int, interval: float = 0.025) -> None:
        self.port = port
        self.interval = interval
        self.times: list[float] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as c:
                    for _ in range(20):
                        t = time.perf_counter()
                        code, _ = c.noop()
                        self.times.append(time.perf_counter() - t)
                        assert code == 250
                        if self._stop.wait(self.interval):
                            break
        except BaseException as exc:
            self.errors.append(exc)

    @property
    def worst(self) -> float:
        return max(self.times)

    async def __aenter__(self) -> NoopProbe:
        self._thread.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()
        # Joined off the event loop: the probe may be waiting for the sink, which runs on it.
        await asyncio.to_thread(self._thread.join, 15)
        assert not self.errors, self.errors
        assert self.times, "the probe never got an answer"


# ---------------------------------------------------------------------------------- parser bombs


def report(
    extra_parts: bytes = b"", to: bytes = RCPT, inner_to: bytes = b"carol@example.net"
) -> bytes:
    """An RFC 3464 hard bounce for carol@example.net, with room for hostile additions."""
    return (
        b"From: MAILER-DAEMON@mail.example.com\r\nTo: " + to + b"\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="p"\r\n\r\n'
        b"--p\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n" + extra_parts + b"--p\r\n"
        b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mail.example.com\r\n\r\n"
        b"Final-Recipient: rfc822; carol@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n\r\n"
        b"--p\r\nContent-Type: message/rfc822\r\n\r\nFrom: news@example.com\r\nTo: "
        + inner_to
        + b"\r\nSubject: hello\r\n\r\nhello\r\n--p--\r\n"
    )


def many_parts(n: int = 100_000) -> bytes:
    return report(extra_parts=b"--p\r\n\r\nx\r\n" * n)


def wide_to(n: int = 10_000) -> bytes:
    to = b",\r\n ".join(b"r%d@example.com" % i for i in range(n))
    return report(to=to, inner_to=to)


def nul_and_8bit() -> bytes:
    eight_bit = bytes(range(128, 256))
    return report(
        extra_parts=b"--p\r\nContent-Type: text/plain; charset=x-\x00\xff\r\nX-\xe9: \x00\x01\r\n\r\n"
        + (b"\x00" * 64 + b"\r\n" + eight_bit + b"\r\n") * 50
    ).replace(b"Subject: Undelivered", b"Subject: \x00\xfe\xff Undelivered")


def bare(line_end: bytes) -> bytes:
    """A small bounce (under the 1,000-octet line limit in total) with only ``line_end``."""
    small = (
        b"From: MAILER-DAEMON@mail.example.com\r\nTo: b@bounces.example.net\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="p"\r\n\r\n'
        b"--p\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; m.example.com\r\n\r\n"
        b"Final-Recipient: rfc822; dave@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        b"--p--\r\n"
    )
    assert len(small) < 1000
    return small.replace(b"\r\n", line_end)


BOMBS: dict[str, Callable[[], bytes]] = {
    "100,000 tiny parts": many_parts,
    "10,000-address To:": wide_to,
    "NUL and 8-bit bytes": nul_and_8bit,
    "LF only": lambda: bare(b"\n"),
    "CR only": lambda: bare(b"\r"),
}


async def test_parser_bombs_end_to_end(env: Env, parse_pool: ParsingPool) -> None:
    """Each bomb: 250 within 2 s of its first data byte, a terminal state (processed or ignored, or
    failed with a reason) within the parse caps, and another session's NOOP under 250 ms all
    along."""
    s = await start_sink(env, parse_pool, process=True)
    try:
        bombs = {name: make() for name, make in BOMBS.items()}
        assert all(len(raw) < s.settings.smtp_max_message_bytes for raw in bombs.values())
        async with NoopProbe(s.port) as probe:
            for name, raw in bombs.items():
                answer, elapsed = await asyncio.to_thread(transaction, s.port, raw)
                assert answer.startswith(b"250 "), (name, answer)
                assert elapsed < 2.0, (name, elapsed)

            async def finished() -> bool:
                return all(r.state != "pending" for r in await rows(env))

            # The caps bound this: a parse ends in parse_pool.timeout_s (5 s) or is killed at its
            # backstop; nothing here comes close.
            await wait_for(finished, timeout=30)
        assert probe.worst < 0.25, probe.worst
        stored = await rows(env)
        assert len(stored) == len(bombs)
        for row in stored:
            assert row.state in ("processed", "ignored", "failed"), row.state
            assert (row.state == "failed") == bool(row.error), (row.state, row.error)
            assert row.attempts <= s.settings.intake_max_attempts
            assert row.claimed_by is None
        # The raw bytes were stored exactly, NUL, 8-bit, bare CR and LF included.
        assert {bytes(r.raw or b"") for r in stored} == {
            raw if raw.endswith(b"\r\n") else raw + b"\r\n" for raw in bombs.values()
        }
    finally:
        await s.stop()


async def test_nul_in_report_fields_fails_nothing(env: Env, parse_pool: ParsingPool) -> None:
    """A DSN with NUL bytes in its Diagnostic-Code and Remote-MTA (PostgreSQL refuses NUL in
    text and JSON) is applied with U+FFFD in their place, and the bounces processed in the same
    batch are applied with it, not failed along with it."""
    culprit = report().replace(
        b"Diagnostic-Code: smtp; 550 5.1.1 User unknown",
        b"Remote-MTA: dns; mx\x00.example.net\r\nDiagnostic-Code: smtp; 550 5.1.1 User\x00unknown",
    )
    others = [report().replace(b"carol@", b"r%d@" % i) for i in range(3)]
    s = await start_sink(env, parse_pool)  # stored first, so that one batch processes them all
    try:
        for raw in (culprit, *others):
            assert (await asyncio.to_thread(send, s.port, raw))[0] == 250
    finally:
        await s.stop()
    s = await start_sink(env, parse_pool, process=True)

    async def finished() -> bool:
        return all(r.state != "pending" for r in await rows(env))

    try:
        await wait_for(finished, timeout=15)
    finally:
        await s.stop()
    assert [(r.state, r.error) for r in await rows(env)] == [("processed", None)] * 4
    async with env.services.db.read() as session:
        found = dict((await session.execute(sa_select(Event.address, Event.diagnostic))).all())
    assert set(found) == {"carol@example.net", "r0@example.net", "r1@example.net", "r2@example.net"}
    assert found["carol@example.net"] == "550 5.1.1 User\ufffdunknown"


async def test_long_bare_lf_message_is_refused_and_the_session_goes_on(sqlite_env: Env) -> None:
    """A real bounce with LF-only line ends is one "line" of several KB on the wire: refused
    with RFC 5321 §4.5.3.1.10's ``500 Line too long`` (nothing stored), and the same session then
    delivers a well-formed message."""
    s = await start_sink(sqlite_env)
    lf_only = (SAMPLES / "bounce/postfix-01.eml").read_bytes().replace(b"\r\n", b"\n")
    assert len(lf_only) > 1001 and b"\r" not in lf_only

    def go() -> tuple[bytes, bytes]:
        with RawClient(s.port) as c:
            assert c.reply().startswith(b"220")
            replies = [c.cmd(b"HELO mta.example.com")]
            replies += [c.cmd(b"MAIL FROM:<>"), c.cmd(b"RCPT TO:<" + RCPT + b">"), c.cmd(b"DATA")]
            assert [r[:3] for r in replies] == [b"250", b"250", b"250", b"354"]
            c.sock.sendall(lf_only + b"\r\n.\r\n")
            refused = c.reply()
            for line in (b"MAIL FROM:<>", b"RCPT TO:<" + RCPT + b">", b"DATA"):
                c.cmd(line)
            c.sock.sendall(report() + b".\r\n")
            return refused, c.reply()

    try:
        refused, accepted = await asyncio.to_thread(go)
        assert refused.startswith(b"500 Line too long"), refused
        assert accepted.startswith(b"250 "), accepted
        [row] = await rows(sqlite_env)
        assert row.raw == report()
    finally:
        await s.stop()


# ---------------------------------------------------------------------------------- STARTTLS


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost (the ``cryptography`` package, else openssl)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        made = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key),
             "-out", str(cert)],
            capture_output=True,
        )  # fmt: skip
        if made.returncode != 0:
            pytest.skip("neither cryptography nor openssl can make a test certificate here")
        return cert, key
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


@pytest_asyncio.fixture(loop_scope="session")
async def tls_sink(sqlite_env: Env, tmp_path: Path) -> AsyncIterator[tuple[Sink, Path]]:
    cert, key = make_certificate(tmp_path)
    s = await start_sink(sqlite_env, smtp_tls_cert=cert, smtp_tls_key=key)
    yield s, cert
    await s.stop()


def starttls_with_injection(port: int, cert: Path, injected: bytes, probe: bytes) -> bytes:
    """EHLO, then ``STARTTLS`` and ``injected`` plaintext in one TCP segment; after the handshake,
    ``probe``: returns the first reply inside TLS and the one after it (a NOOP's)."""
    with RawClient(port) as c:
        assert c.reply().startswith(b"220")
        assert b"STARTTLS" in c.cmd(b"EHLO client.example.com")
        c.sock.sendall(b"STARTTLS\r\n" + injected)
        # Read the 220 byte by byte: a buffered read could swallow the start of the handshake.
        line = b""
        while not line.endswith(b"\n"):
            chunk = c.sock.recv(1)
            assert chunk, line
            line += chunk
        assert line.startswith(b"220"), line
        context = ssl.create_default_context(cafile=str(cert))
        with context.wrap_socket(c.sock, server_hostname="localhost") as tls:
            f = tls.makefile("rb")

            def reply() -> bytes:
                lines = [f.readline()]
                while lines[-1][3:4] == b"-":
                    lines.append(f.readline())
                return b"".join(lines)

            tls.sendall(probe + b"\r\n")
            first = reply()
            tls.sendall(b"NOOP\r\n")
            return first + reply()


@pytest.mark.parametrize(
    ("injected", "probe", "expected"),
    [
        # Run inside TLS, the injected EHLO and MAIL would make this RCPT a 250.
        (
            b"EHLO evil.example\r\nMAIL FROM:<evil@example.com>\r\n",
            b"RCPT TO:<b@bounces.example.net>",
            b"503 ",
        ),
        # RSET's "250 OK" would come before HELP's list.
        (b"RSET\r\n", b"HELP", b"250 Supported commands: "),
        # No TLS inside TLS (aiosmtpd alone would say 220 and nest a second handshake).
        (b"", b"STARTTLS", Reply.TLS_ACTIVE.encode() + b"\r\n"),
    ],
    ids=["ehlo-mail", "rset", "second-starttls"],
)
async def test_plaintext_pipelined_after_starttls_is_discarded(
    tls_sink: tuple[Sink, Path], injected: bytes, probe: bytes, expected: bytes
) -> None:
    """CVE-2011-0411 (RFC 3207 §4.2): commands sent in the clear behind STARTTLS are dropped,
    never executed as if they came over TLS; and TLS is not started twice."""
    s, cert = tls_sink
    transcript = await asyncio.to_thread(starttls_with_injection, s.port, cert, injected, probe)
    assert transcript.startswith(expected), transcript
    assert transcript.endswith(b"250 OK\r\n") and transcript.count(b"\r\n") == 2, transcript


async def test_failed_tls_handshake_frees_its_slot(tls_sink: tuple[Sink, Path]) -> None:
    """Garbage instead of a TLS ClientHello: the connection closes, its slot is freed, the sink
    serves the next client."""
    s, _ = tls_sink

    def go() -> bytes:
        with RawClient(s.port, timeout=5) as c:
            c.reply()
            c.cmd(b"EHLO client.example.com")
            assert c.cmd(b"STARTTLS").startswith(b"220")
            c.sock.sendall(b"MAIL FROM:<x@example.com>\r\n" * 20)
            with contextlib.suppress(ConnectionError):
                return c.rest()
            return b""

    after = await asyncio.to_thread(go)
    assert b"250" not in after  # nothing of the plaintext was run
    await wait_for(no_connections(s), timeout=5)
    assert (await asyncio.to_thread(send, s.port, report()))[0] == 250


def no_connections(s: Sink) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return s.sink.connections == 0

    return check


# ---------------------------------------------------------------------------------- floods


def flood(port: int, line: bytes, limit: int = 5000, chunk: int = 50) -> tuple[list[bytes], float]:
    """Send ``line`` up to ``limit`` times, ``chunk`` pipelined at a time, reading the replies to
    each chunk before the next (so the server never closes on unread data, which would be a
    reset instead of its reply). Returns every reply, until the server closes."""
    replies: list[bytes] = []
    started = time.perf_counter()
    with RawClient(port) as c:
        assert c.reply().startswith(b"220")
        assert c.cmd(b"EHLO flood.example.com").startswith(b"250")
        sent = 0
        while sent < limit:
            try:
                c.sock.sendall((line + b"\r\n") * chunk)
            except OSError:
                break
            sent += chunk
            for _ in range(chunk):
                try:
                    replies.append(c.reply())
                except (ConnectionError, OSError):
                    return replies, time.perf_counter() - started
        return replies, time.perf_counter() - started


async def test_noop_flood_is_cut_off_and_others_are_served(sqlite_env: Env) -> None:
    """Four clients each pipeline thousands of NOOPs: each is answered ``421 4.7.0`` after its
    command budget (recipient limit + COMMAND_SLACK without a message) and closed; meanwhile
    another session's NOOP answers in under 250 ms, and afterwards mail is accepted and every
    connection slot is free."""
    s = await start_sink(sqlite_env)
    budget = s.settings.smtp_max_recipients + COMMAND_SLACK
    try:
        async with NoopProbe(s.port) as probe:
            results = await asyncio.gather(
                *(asyncio.to_thread(flood, s.port, b"NOOP") for _ in range(4))
            )
        assert probe.worst < 0.25, probe.worst
        for replies, _ in results:
            # EHLO was the first command of the budget; the NOOP past it gets the 421.
            assert replies[-1] == Reply.TOO_MANY_COMMANDS.encode() + b"\r\n", replies[-3:]
            assert replies[:-1] == [b"250 OK\r\n"] * (budget - 1)
        assert (await asyncio.to_thread(send, s.port, report()))[0] == 250
        await wait_for(no_connections(s), timeout=5)
    finally:
        await s.stop()


@pytest.mark.parametrize(
    ("line", "limit"),
    [
        (b"", MAX_ERRORS),  # "500 Error: bad syntax", never counted by aiosmtpd itself
        (b"RCPT TO:<victim@elsewhere.example>", MAX_ERRORS),  # 503 (no MAIL) each time
        (b"XYZZY", 4),  # aiosmtpd closes at its fifth unknown command: with our 421
        (b"MAIL TO:<x@example.com>", MAX_ERRORS),  # 501 syntax
    ],
    ids=["blank-lines", "rcpt-harvest", "unknown-commands", "syntax-errors"],
)
async def test_error_flood_is_cut_off_with_421(sqlite_env: Env, line: bytes, limit: int) -> None:
    """A client that only makes errors is closed with ``421 4.7.0`` after MAX_ERRORS of them
    (Postfix's smtpd_hard_error_limit), never left to flood."""
    s = await start_sink(sqlite_env)
    try:
        replies, _ = await asyncio.to_thread(flood, s.port, line, 1000, 10)
        assert replies[-1] == Reply.TOO_MANY_ERRORS.encode() + b"\r\n", replies[-3:]
        errors = replies[:-1]
        assert len(errors) == limit and all(r[:1] in b"45" for r in errors), errors
    finally:
        await s.stop()


async def test_busy_legitimate_session_is_never_cut_off(sqlite_env: Env) -> None:
    """One connection carrying many messages, each with the most recipients allowed, RSETs and
    keep-alive NOOPs between them, and a refused recipient now and then: the budget is per
    message, so it is never exhausted."""
    s = await start_sink(sqlite_env)
    n_rcpt = s.settings.smtp_max_recipients

    def go() -> list[int]:
        codes = []
        with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as c:
            c.ehlo("mta.example.com")
            for i in range(4):
                for _ in range(COMMAND_SLACK // 2):
                    assert c.noop()[0] == 250
                assert c.rset()[0] == 250
                c.mail("")
                assert c.rcpt("x@elsewhere.example")[0] == 550
                for k in range(n_rcpt):
                    assert c.rcpt(f"r{k}@bounces.example.net")[0] == 250
                codes.append(c.data(report() + b"message %d\r\n" % i)[0])
        return codes

    try:
        assert await asyncio.to_thread(go) == [250] * 4
    finally:
        await s.stop()


# ---------------------------------------------------------------------------------- trickles


def trickle(sock: socket.socket, data: bytes, per_second: float, limit_s: float) -> bytes:
    """Send ``data`` one byte at a time at ``per_second`` until the server says something (and
    closes); returns what it said."""
    said = b""
    deadline = time.monotonic() + limit_s
    for i in range(len(data)):
        try:
            sock.sendall(data[i : i + 1])
        except OSError:
            break
        readable, _, _ = select.select([sock], [], [], 1 / per_second)
        if readable:
            break
        assert time.monotonic() < deadline, "still connected"
    with contextlib.suppress(OSError):
        while chunk := sock.recv(4096):
            said += chunk
    return said


async def test_trickled_command_is_cut_at_the_command_timeout(sqlite_env: Env) -> None:
    """A command arriving one byte at a time keeps no timer alive: the bytes do not restart
    ``smtp_timeout_s``, so the session ends with ``421 4.4.2`` that long after the last complete
    command."""
    s = await start_sink(sqlite_env, smtp_timeout_s=0.5)

    def go() -> tuple[bytes, float]:
        with RawClient(s.port) as c:
            assert c.reply().startswith(b"220")
            started = time.monotonic()
            said = trickle(c.sock, b"NOOP " + b"x" * 200 + b"\r\n", per_second=20, limit_s=5)
            return said, time.monotonic() - started

    try:
        said, elapsed = await asyncio.to_thread(go)
        assert said == Reply.TIMEOUT.encode() + b"\r\n", said
        assert 0.4 < elapsed < 2.0, elapsed
    finally:
        await s.stop()


async def test_trickled_data_is_cut_at_the_command_timeout(sqlite_env: Env) -> None:
    """All of DATA must arrive within ``smtp_timeout_s`` of the DATA command, however steadily it
    trickles; nothing is stored."""
    s = await start_sink(sqlite_env, smtp_timeout_s=0.6)

    def go() -> tuple[bytes, float]:
        with RawClient(s.port) as c:
            c.reply()
            for line in (b"HELO mta.example.com", b"MAIL FROM:<>", b"RCPT TO:<" + RCPT + b">"):
                c.cmd(line)
            assert c.cmd(b"DATA").startswith(b"354")
            started = time.monotonic()
            said = trickle(c.sock, report(), per_second=50, limit_s=5)
            return said, time.monotonic() - started

    try:
        said, elapsed = await asyncio.to_thread(go)
        assert said == Reply.TIMEOUT.encode() + b"\r\n", said
        assert 0.5 < elapsed < 2.0, elapsed
        assert await rows(sqlite_env) == []
    finally:
        await s.stop()


async def test_busy_session_ends_at_the_session_deadline(sqlite_env: Env) -> None:
    """A client that is never idle (a NOOP every 0.1 s, well inside ``smtp_timeout_s``) is still
    closed with ``421 4.4.2`` at ``smtp_session_timeout_s``."""
    s = await start_sink(sqlite_env, smtp_timeout_s=0.3, smtp_session_timeout_s=0.8)

    def go() -> tuple[int, bytes, float]:
        answered = 0
        with RawClient(s.port) as c:
            started = time.monotonic()
            c.reply()
            while time.monotonic() - started < 5:
                # The 421 comes unasked: read it before sending into a closed connection.
                if select.select([c.sock], [], [], 0.1)[0]:
                    return answered, c.rest(), time.monotonic() - started
                assert c.cmd(b"NOOP").startswith(b"250")
                answered += 1
        return answered, b"", time.monotonic() - started

    try:
        answered, reply, elapsed = await asyncio.to_thread(go)
        assert reply == Reply.SESSION_TOO_LONG.encode() + b"\r\n", reply
        assert answered >= 5  # the idle timer (0.3 s) never fired
        assert 0.7 < elapsed < 2.0, elapsed
    finally:
        await s.stop()


async def test_session_deadline_waits_for_the_answer_to_a_stored_message(
    sqlite_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline passing while a message is being committed: the client first gets its 250
    (the message is stored), then ``421 4.4.2``; no acknowledged message is cut off."""
    s = await start_sink(sqlite_env, smtp_session_timeout_s=0.3)
    real = s.intake.committer.store.store_many

    async def slow_commit(messages: Any) -> list[StoreResult]:
        await asyncio.sleep(0.6)  # past the deadline, inside smtp_storage_timeout_s (10 s)
        return await real(messages)

    monkeypatch.setattr(s.intake.committer.store, "store_many", slow_commit)

    def go() -> bytes:
        with RawClient(s.port) as c:
            c.reply()
            for line in (b"HELO mta.example.com", b"MAIL FROM:<>", b"RCPT TO:<" + RCPT + b">"):
                c.cmd(line)
            assert c.cmd(b"DATA").startswith(b"354")
            c.sock.sendall(report() + b".\r\n")
            return c.rest()

    try:
        said = await asyncio.to_thread(go)
        assert said == (Reply.ACCEPTED + "\r\n" + Reply.SESSION_TOO_LONG + "\r\n").encode()
        assert len(await rows(sqlite_env)) == 1
    finally:
        await s.stop()


# ---------------------------------------------------------------------------------- DATA reader


class Capture:
    """A handler for a plain aiosmtpd server: the reference for how DATA is read."""

    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.contents.append(envelope.original_content)
        return "250 OK"


def data_cases(n: int = 200, seed: int = 3207) -> list[bytes]:
    """DATA bodies rich in dots, bare CRs and LFs, and lines around the 1,001-octet limit; each
    ends at the terminator appended to it and nowhere before."""
    rng = random.Random(seed)
    atoms = [b"\r\n", b"\r", b"\n", b".", b"..", b"x", b"abc def", b"\x00\xff", b".\r", b"\n."]
    cases = [
        b"",
        b".",
        b"..",
        b"...\r\n..\r\n.x\r\n",
        b"a\n.\nb\r.\rc",  # smuggling attempts: not an end
        b"a\r\n.\nMAIL FROM:<x@example.com>\r\n",
        b"a\r\r\n",
        b"x" * 999,
        b"x" * 1000,
        b"." + b"x" * 998,  # stuffed: 1,001 with its CRLF
        b"." + b"x" * 999,
        b"y\r\n" + b"x" * 1500 + b"\r" + b"x" * 10,
        b"\r" * 2000,
        b"\n" * 2000,
    ]
    # Around the 4,000-octet size limit of the test (stuffed dots count, as in aiosmtpd).
    cases += [b"0123456789.abcdefg\r\n" * 199 + b"y" * k for k in range(14, 22)]
    cases += [b"..23456789abcdefgh\r\n" * 199 + b"." * k for k in range(14, 22)]
    while len(cases) < n:
        parts = [rng.choice(atoms) for _ in range(rng.randrange(1, 60))]
        if rng.random() < 0.2:
            parts.insert(rng.randrange(len(parts) + 1), b"z" * rng.randrange(990, 1010))
        cases.append(b"".join(parts))
    out = []
    for body in cases:
        full = body + (b".\r\n" if body.endswith(b"\r\n") else b"\r\n.\r\n")
        if (b"\r\n" + full).find(b"\r\n.\r\n") == len(full) - 3:
            out.append(full)
    return out


async def test_read_data_agrees_with_aiosmtpd() -> None:
    """The sink's bulk DATA reader against aiosmtpd's own line-at-a-time DATA on a live server,
    on hundreds of bodies fed in random chunk sizes: the same content (dot-stuffing undone, bare
    CR/LF untouched), the same refusals, and the bytes after the dot left for the next command."""
    size_limit = 4000
    capture = Capture()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(capture, data_size_limit=size_limit, loop=loop), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    cases = data_cases()

    def reference() -> list[bytes]:
        replies = []
        with RawClient(port) as c:
            c.reply()
            c.cmd(b"HELO mta.example.com")
            for full in cases:
                c.cmd(b"MAIL FROM:<>")
                c.cmd(b"RCPT TO:<b@bounces.example.net>")
                assert c.cmd(b"DATA").startswith(b"354")
                c.sock.sendall(full + b"NOOP\r\n")
                replies.append(c.reply())
                assert c.reply() == b"250 OK\r\n"  # the NOOP after the dot: a command
        return replies

    try:
        replies = await asyncio.to_thread(reference)
    finally:
        server.close()
        await server.wait_closed()
    expected = iter(capture.contents)
    rng = random.Random(5321)
    for full, reply in zip(cases, replies, strict=True):
        reader = asyncio.StreamReader(limit=SMTP.line_length_limit)
        stream = full + b"NOOP\r\n"

        async def feed(reader: asyncio.StreamReader = reader, stream: bytes = stream) -> None:
            pos = 0
            while pos < len(stream):
                step = rng.choice((1, 2, 3, 7, 64, 999, 1001, 4096))
                reader.feed_data(stream[pos : pos + step])
                pos += step
                await asyncio.sleep(0)
            reader.feed_eof()

        feeder = asyncio.create_task(feed())
        content, refusal = await read_data(reader, size_limit, SMTP.line_length_limit)
        await feeder
        assert await reader.read() == b"NOOP\r\n", full
        if reply.startswith(b"250"):
            assert (content, refusal) == (next(expected), None), full
        else:
            assert content is None and refusal is not None, full
            assert refusal[:3].encode() == reply[:3], (full, refusal, reply)


# ---------------------------------------------------------------------------------- parse pool


def parser_bug(raw: bytes, **_: Any) -> MessageAnalysis:
    """A parser that crashes with something other than its own ParseError."""
    raise KeyError("parser bug")


# A parse whose result cannot be pickled back to the service. Workers import a parse function by
# name; this one is in the standard library, so the shared workers need not import this module.
UNSENDABLE: Callable[..., Any] = unittest.mock.Mock


async def test_parser_bugs_fail_the_message_never_the_batch(parse_pool: ParsingPool) -> None:
    """A parser exception (inline) or a result that cannot come back from the worker is that
    message's terminal error, not an exception that would take the intake's whole batch down
    and leave its messages claimed, to be retried without end."""
    inline = ParsingPool(workers=1, inline_max_bytes=1 << 20, parse_fn=parser_bug)
    outcome = await inline.parse(report())
    assert (outcome.analysis, outcome.retry) == (None, False)
    assert outcome.error == "parser error: KeyError: 'parser bug'"
    [many] = await inline.parse_many([(report(), None)])
    assert many.error == outcome.error

    restarts = parse_pool.restarts
    parse_pool.parse_fn = UNSENDABLE  # sent by name with each parse
    try:
        alone = await parse_pool.parse(report())
        assert (alone.analysis, alone.retry) == (None, False), alone
        assert alone.error is not None and alone.error.startswith("parse worker error"), alone
        [chunked] = await parse_pool.parse_many([(report(), None)])
        assert chunked.retry and chunked.error == alone.error  # then parsed alone, as above
        assert parse_pool.restarts == restarts
    finally:
        parse_pool.parse_fn = analyse_message
