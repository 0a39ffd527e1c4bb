"""The private parts of asyncio, aiosmtpd and redis-py the service relies on (each behind one
adapter: app/intake/smtp/internals.py, app/cache/resp.py) still exist and behave as assumed; a
library upgrade that changes them fails here, not in production."""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import Connection, ConnectionPool

from app.cache import resp
from app.intake.parse_pool import worker_processes
from app.intake.smtp import internals


async def test_aiosmtpd_and_asyncio_internals_match_the_installed_libraries() -> None:
    assert internals.problems(asyncio.get_running_loop()) == []


async def test_a_changed_aiosmtpd_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(SMTP, "_set_post_data_state")
    monkeypatch.setattr(SMTP, "_timeout_cb", lambda self, reason: None)
    found = internals.problems(asyncio.get_running_loop())
    assert any("_set_post_data_state is gone" in p for p in found)
    assert any("_timeout_cb takes (self, reason)" in p for p in found)


# MAIL / RCPT arguments: what MTAs send (with parameters, the null path), and what they should not.
PATHS = [
    "", "<>", "<> SIZE=100", "<>  ", " <>", "<>x", "<> (c) SIZE=1", "<>\tSIZE=1",
    "<a@b.c>", " <a@b.c>", "<A@B.C>", "<a.b+c@d-e.f>", "<a=b@c.d>", "<a@-b.c>",
    "<a@b.c> SIZE=10 BODY=8BITMIME", "<a@b.c>\tSIZE=1", "<a@b.c>  SIZE=1  ", "<a@b.c> SIZE=1\t",
    "<a@b.c> (c) SIZE=1", "<a@b.c>(c)", '<a@b.c> "x"', "<a@b.c>>", "<a@b.c> <x>", "<a@b.c>x",
    "<a@b.c>  ", '<"q x"@b.c>', "<@r.s:a@b.c>", "<a@[1.2.3.4]>", "<ü@b.c>", "<a b@c.d>",
    "<.a@b.c>", "<a..b@c.d>", "<a@b..c>", "<a@b.c.>", "<a@b.c", "a@b.c", "a@b.c SIZE=1",
    "<" + "x" * 64 + "@b.c>", "<" + "x" * 65 + "@b.c>", "<bounces+123-abc=example.org@mx.example>",
]  # fmt: skip


def _sessions() -> tuple[SMTP, internals.AiosmtpdSession]:
    loop = asyncio.new_event_loop()
    try:
        return SMTP(handler=object(), loop=loop), internals.AiosmtpdSession(object(), loop=loop)
    finally:
        loop.close()


@pytest.mark.parametrize("arg", PATHS)
def test_the_address_parsing_returns_what_aiosmtpd_returns(arg: str) -> None:
    theirs, ours = _sessions()
    assert ours._getaddr(arg) == theirs._getaddr(arg)


_PATH_PART = st.text(alphabet='ab.@<>()" -+=_[]:\t\u00fc', max_size=12)


_ATOM = st.text(alphabet="aZ9!#$%&'*+-/=?^_`{|}~.\u00fc\"", min_size=0, max_size=8)
_PATHS = st.one_of(
    st.lists(_PATH_PART, min_size=1, max_size=4).map("".join),
    st.builds(
        lambda lead, local, domain, close, rest: f"{lead}<{local}@{domain}{close}{rest}",
        st.sampled_from(["", " ", "\t"]),
        _ATOM,
        _ATOM,
        st.sampled_from([">", "", ">>"]),
        st.sampled_from(["", " ", "  SIZE=1", "\tBODY=8BITMIME ", " (c) x", "(c)", "x", " <y>"]),
    ),
)


@settings(max_examples=3000, deadline=None)
@given(_PATHS)
def test_the_address_parsing_returns_what_aiosmtpd_returns_on_any_text(arg: str) -> None:
    theirs, ours = _SESSIONS
    try:
        expected = theirs._getaddr(arg)
    except Exception as exc:  # aiosmtpd's parser raising: ours must raise the same
        with pytest.raises(type(exc)):
            ours._getaddr(arg)
        return
    assert ours._getaddr(arg) == expected


_SESSIONS = _sessions()


async def test_unread_and_drop_unread_on_a_real_stream_reader() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"DATA-END|QUIT\r\n")
    assert await reader.read(9) == b"DATA-END|"
    internals.unread(reader, bytearray(b"RSET\r\n"))
    assert await reader.readline() == b"RSET\r\n"
    assert await reader.readline() == b"QUIT\r\n"
    reader.feed_data(b"NOOP\r\nNOOP\r\n")
    internals.drop_unread(reader)
    reader.feed_eof()
    assert await reader.read() == b""


def test_redis_py_internals_match_the_installed_library() -> None:
    assert resp.problems() == []


def test_a_changed_redis_py_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    async def get_connection(self: ConnectionPool, command_name: str) -> None: ...

    monkeypatch.setattr(ConnectionPool, "get_connection", get_connection)
    assert resp.problems() == [
        "redis-py: ConnectionPool.get_connection now requires ['command_name']"
    ]


@pytest_asyncio.fixture(loop_scope="session")
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_exchange_sends_packed_commands_and_reads_every_reply(
    client: aioredis.Redis,
) -> None:
    key = f"stoplist-test:{uuid.uuid4().hex}".encode()
    await client.set(key, b"value", ex=60)
    mget = b"*3\r\n$4\r\nMGET\r\n$%d\r\n%b\r\n$7\r\nmissing\r\n" % (len(key), key)
    assert await resp.exchange(client, mget, 1) == [[b"value", None]]
    ping = b"*1\r\n$4\r\nPING\r\n"
    assert await resp.exchange(client, mget + ping, 2, raw=True) == [[b"value", None], b"PONG"]
    await client.delete(key)
    # The connection went back to the pool and serves the next caller.
    assert await client.ping() is True


async def test_an_interrupted_exchange_never_hands_a_half_read_connection_on(
    client: aioredis.Redis,
) -> None:
    # Two replies sent, one read before the reader is cancelled: the connection is dropped.
    key = b"stoplist-test:nothing"
    slow = b"*3\r\n$5\r\nBLPOP\r\n$%d\r\n%b\r\n$1\r\n1\r\n" % (len(key), key)
    task = asyncio.ensure_future(resp.exchange(client, b"*1\r\n$4\r\nPING\r\n" + slow, 2))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await client.ping() is True
    assert await resp.exchange(client, b"*1\r\n$4\r\nPING\r\n", 1) == [b"PONG"]


def test_a_process_pools_workers_can_be_reached() -> None:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as executor:
        assert worker_processes(executor) == []
        assert executor.submit(abs, -3).result(timeout=60) == 3
        (worker,) = worker_processes(executor)
        assert isinstance(worker, multiprocessing.process.BaseProcess)
        assert worker.is_alive()


async def test_the_sink_refuses_to_start_on_a_changed_aiosmtpd(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.intake.smtp import SmtpSink
    from app.settings import Settings

    monkeypatch.delattr(SMTP, "_set_post_data_state")
    sink = SmtpSink(Settings(smtp_port=0), intake=None)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="_set_post_data_state"):
        await sink.start()


def test_the_redis_cache_refuses_a_changed_redis_py(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.cache import RedisCache

    async def send_packed_command(self: Connection, command: bytes) -> None: ...

    monkeypatch.setattr(Connection, "send_packed_command", send_packed_command)
    with pytest.raises(RuntimeError, match=r"send_packed_command lost \['check_health'\]"):
        RedisCache("redis://127.0.0.1:6379/15")
