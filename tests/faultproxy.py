"""A fault-injecting TCP proxy for tests: put it between the service and PostgreSQL or Redis, then
break the path at run time instead of stopping the real servers.

    proxy = await FaultProxy("127.0.0.1", 5432, protocol="postgres").start()
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{proxy.port}/test"
    ...
    proxy.refuse()          # new connections are reset at once (as if nothing listened)
    await proxy.reset()     # every open connection is reset (RST) now
    proxy.blackhole()       # nothing flows either way and nothing is closed: a SIGSTOPped server
    proxy.passthrough()     # back to normal (held bytes flow again, as after SIGCONT)

Triggers act on the client -> server stream when it carries a pattern:

* ``DROP``: the connection is cut (RST both ways) *before* the matching bytes are forwarded: the
  statement or command never reaches the server.
* ``UNCOMMITTED`` (``protocol="postgres"`` only): the matching statement is executed but its
  transaction is never committed. In the extended query protocol a statement outside ``BEGIN``
  commits when the server processes the ``Sync`` that follows its ``Execute``; the proxy forwards
  everything up to that ``Sync``, sends a ``Flush`` instead, waits for the server to report the
  statement's result (``CommandComplete`` or ``ErrorResponse``), then cuts the connection, so the
  server rolls the statement back. (A simple ``Query`` commits by itself: it is cut before it
  runs instead.)
* ``LOSE_REPLY``: the matching bytes are forwarded and executed; the server's reply is swallowed
  and the connection is cut once the server has finished answering (PostgreSQL: at the
  ``ReadyForQuery`` that follows, i.e. after the implicit or explicit commit; raw: at the first
  reply bytes). The commit happened, the client never learns it: the ambiguous commit.
* ``HOLD``: the matching bytes wait in the proxy until ``trigger.release()``; ``trigger.reached``
  is set when they arrive (to do something at an exact point of a conversation).

With ``protocol="raw"`` (Redis, anything) a pattern is searched in the byte stream (also across
read boundaries) and a trigger acts on the whole read that completes it. With
``protocol="postgres"`` the stream is split into frontend messages and a pattern is matched
against the SQL each message *executes*: a simple ``Query``, or an ``Execute`` whose portal was
bound to a statement parsed earlier on that connection. That also catches statements asyncpg and
SQLAlchemy prepared once and re-execute by name (no SQL text on the wire then), and never fires on
a mere ``Parse``/``Describe`` (preparing is not executing). Protocol reference: PostgreSQL
documentation, "Frontend/Backend Protocol" (chapter 53, message flow and formats).

``trigger.times`` limits how often it fires (``None``: every match until ``clear()``); ``fired``
counts the times it did, so a test can check that the fault it meant to inject happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Literal, Self

WireProtocol = Literal["raw", "postgres"]

# Frontend message codes without a type byte, sent before the startup message (section 53.7).
_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_SYNC = b"S\x00\x00\x00\x04"
_FLUSH = b"H\x00\x00\x00\x04"


class Mode(enum.Enum):
    PASS = "pass"
    REFUSE = "refuse"
    BLACKHOLE = "blackhole"


class Fault(enum.Enum):
    DROP = "drop"
    UNCOMMITTED = "uncommitted"
    LOSE_REPLY = "lose_reply"
    HOLD = "hold"


@dataclass(eq=False)
class Trigger:
    pattern: bytes
    fault: Fault
    times: int | None = None
    skip: int = 0  # let this many matches through first
    after: bytes | None = None  # only once this was executed earlier on the same connection
    fired: int = 0
    matched: int = 0
    # What the server answered to what a trigger let through and the client never saw
    # (postgres: CommandComplete tags such as b"INSERT 0 1", or b"ERROR"; raw: the bytes).
    swallowed: list[bytes] = field(default_factory=list)
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        """Let bytes held by a ``HOLD`` trigger go on (and every later match of it)."""
        self._released.set()

    def _take(self, conn: _Conn, text: bytes) -> bool:
        if self.after is not None and self not in conn.primed:
            if self.after in text:
                conn.primed.add(self)
            return False
        if self.pattern not in text:
            return False
        self.matched += 1
        if self.matched <= self.skip or (self.times is not None and self.fired >= self.times):
            return False
        self.fired += 1
        self.reached.set()
        return True


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset, not a FIN: what a peer sees when the other side vanishes."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _PgFrames:
    """Splits one direction of a PostgreSQL connection into whole messages."""

    def __init__(self, frontend: bool) -> None:
        self.frontend = frontend
        self.buf = b""
        self.started = not frontend  # the frontend's first messages carry no type byte
        self.single_byte_reply = False  # backend: the one-byte answer to SSLRequest/GSSENCRequest
        self.raw = False  # encrypted (TLS/GSS) after negotiation: frames no longer visible
        self.asked_encryption = False  # frontend: an SSLRequest/GSSENCRequest was just sent

    def feed(self, data: bytes) -> list[bytes]:
        if self.raw:
            return [data]
        self.buf += data
        out = []
        while True:
            if self.single_byte_reply and self.buf:
                msg, self.buf = self.buf[:1], self.buf[1:]
                self.single_byte_reply = False
                out.append(msg)
                continue
            if not self.started:
                if len(self.buf) < 8:
                    break
                (length,) = struct.unpack("!I", self.buf[:4])
                if len(self.buf) < length:
                    break
                msg, self.buf = self.buf[:length], self.buf[length:]
                (code,) = struct.unpack("!I", msg[4:8])
                if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                    self.asked_encryption = True  # the server answers with a single byte
                else:
                    self.started = True  # the StartupMessage (or a CancelRequest)
                out.append(msg)
                continue
            if len(self.buf) < 5:
                break
            (length,) = struct.unpack("!I", self.buf[1:5])
            if len(self.buf) < 1 + length:
                break
            msg, self.buf = self.buf[: 1 + length], self.buf[1 + length :]
            out.append(msg)
        return out


def _cstr(body: bytes, at: int) -> tuple[bytes, int]:
    end = body.index(b"\x00", at)
    return body[at:end], end + 1


class _PgStatements:
    """What SQL each frontend message executes, tracking named statements and portals."""

    def __init__(self) -> None:
        self.statements: dict[bytes, bytes] = {}
        self.portals: dict[bytes, bytes] = {}

    def executes(self, msg: bytes) -> bytes | None:
        kind, body = msg[:1], msg[5:]
        try:
            if kind == b"Q":
                return _cstr(body, 0)[0]
            if kind == b"P":
                name, at = _cstr(body, 0)
                self.statements[name] = _cstr(body, at)[0]
            elif kind == b"B":
                portal, at = _cstr(body, 0)
                statement, _ = _cstr(body, at)
                self.portals[portal] = self.statements.get(statement, b"")
            elif kind == b"E":
                return self.portals.get(_cstr(body, 0)[0], b"")
            elif kind == b"C" and body[:1] == b"S":
                self.statements.pop(_cstr(body, 1)[0], None)
        except ValueError:  # not a well-formed message: nothing to match
            return None
        return None


class _Conn:
    def __init__(self, proxy: FaultProxy, client: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.client = client
        self.server: asyncio.StreamWriter | None = None
        self.stalled = False  # blackholed for good (see ``passthrough(resume=False)``)
        self.tail = b""  # raw: the end of the previous read, for patterns split across reads
        self.swallow_until: Literal["result", "ready", "any"] | None = None
        self.closed = False
        pg = proxy.protocol == "postgres"
        self.up_frames = _PgFrames(frontend=True) if pg else None
        self.down_frames = _PgFrames(frontend=False) if pg else None
        self.sql = _PgStatements() if pg else None
        self.uncommitted = False  # an UNCOMMITTED trigger fired: replace the next Sync
        self.primed: set[Trigger] = set()  # triggers whose ``after`` was seen on this connection
        self.fired: Trigger | None = None  # the trigger whose fault is under way

    def cut(self) -> None:
        if self.closed:
            return
        self.closed = True
        _rst(self.client)
        if self.server is not None:
            _rst(self.server)

    async def flowing(self) -> None:
        """Wait while the proxy is blackholed (or this connection stalled for good)."""
        while True:
            if self.closed:
                raise ConnectionAbortedError("cut by the proxy")
            if self.proxy.mode is not Mode.BLACKHOLE and not self.stalled:
                return
            await self.proxy._changed.wait()


class FaultProxy:
    """Listens on 127.0.0.1 (port 0: any free port) and forwards to ``host:port``."""

    def __init__(self, host: str, port: int, *, protocol: WireProtocol = "raw") -> None:
        self.upstream = (host, port)
        self.protocol = protocol
        self.mode = Mode.PASS
        self.triggers: list[Trigger] = []
        self.accepted = 0
        # postgres: the SQL of the latest executions seen (to find what to match on)
        self.executed: deque[bytes] = deque(maxlen=1000)
        self._conns: set[_Conn] = set()
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def connections(self) -> int:
        return len(self._conns)

    async def aclose(self) -> None:
        """Stop listening and cut every connection."""
        if self._server is not None:
            self._server.close()
        self.clear()
        for conn in list(self._conns):
            conn.cut()
        self._set_mode(Mode.PASS)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError, asyncio.IncompleteReadError):
                await task
        while self._conns:  # the connection handlers finish once their pumps ended
            await asyncio.sleep(0.01)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---------------------------------------------------------------- switches

    def _set_mode(self, mode: Mode) -> None:
        self.mode = mode
        # wake every pump waiting on the mode; they re-check and wait on a fresh event
        self._changed.set()
        self._changed = asyncio.Event()

    def passthrough(self, *, resume: bool = True) -> None:
        """Forward again, held bytes included (as after SIGCONT). ``resume=False`` leaves the
        connections that were blackholed hung for good (a database host that came back without
        ever answering its old TCP connections) until a later ``passthrough()``."""
        for conn in self._conns:
            conn.stalled = not resume and (self.mode is Mode.BLACKHOLE or conn.stalled)
        self._set_mode(Mode.PASS)

    def refuse(self) -> None:
        """New connections are reset at once; open ones are left alone (see ``reset``)."""
        self._set_mode(Mode.REFUSE)

    def blackhole(self) -> None:
        """Nothing flows either way on any connection, new ones included; nothing is closed."""
        self._set_mode(Mode.BLACKHOLE)

    async def reset(self) -> int:
        """Reset every open connection now; returns how many."""
        conns = list(self._conns)
        for conn in conns:
            conn.cut()
        await asyncio.sleep(0)
        return len(conns)

    def arm(
        self,
        pattern: bytes,
        fault: Fault,
        *,
        times: int | None = None,
        skip: int = 0,
        after: bytes | None = None,
    ) -> Trigger:
        """Inject ``fault`` where the client -> server stream carries ``pattern`` (see the module
        docstring); ``after``: only on a connection that carried that earlier (e.g. the COMMIT of
        a transaction that inserted into a given table)."""
        if fault is Fault.UNCOMMITTED and self.protocol != "postgres":
            raise ValueError("UNCOMMITTED needs protocol='postgres'")
        trigger = Trigger(pattern, fault, times=times, skip=skip, after=after)
        self.triggers.append(trigger)
        return trigger

    def clear(self) -> None:
        """Disarm every trigger (held bytes are released)."""
        for trigger in self.triggers:
            trigger.release()
        self.triggers.clear()

    # ---------------------------------------------------------------- forwarding

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode is Mode.REFUSE:
            _rst(writer)
            return
        conn = _Conn(self, writer)
        self._conns.add(conn)
        pumps: set[asyncio.Task[None]] = set()
        try:
            up_reader, conn.server = await asyncio.open_connection(*self.upstream)
            if conn.closed:  # reset while connecting
                _rst(conn.server)
                return
            pumps = {
                asyncio.ensure_future(self._upstream(conn, reader)),
                asyncio.ensure_future(self._downstream(conn, up_reader)),
            }
            self._tasks |= pumps
            # Both ends closing in turn is a normal end; any error (a reset, a cut) ends both.
            done, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            if pending or any(t.exception() is not None for t in done):
                conn.cut()
        except (OSError, asyncio.CancelledError):
            # Upstream unreachable, or the proxy closing: a server-side callback task must end
            # quietly (asyncio logs a cancelled one as an error).
            conn.cut()
        finally:
            for task in pumps:
                task.cancel()
            for task in pumps:
                with contextlib.suppress(
                    asyncio.CancelledError, OSError, asyncio.IncompleteReadError
                ):
                    await task
            self._tasks -= pumps
            self._conns.discard(conn)
            if not conn.closed:
                conn.closed = True
                writer.close()
                if conn.server is not None:
                    conn.server.close()

    async def _upstream(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        assert conn.server is not None
        while True:
            data = await reader.read(65536)
            if not data:
                if conn.server.can_write_eof() and not conn.closed:
                    conn.server.write_eof()
                return
            await conn.flowing()
            if conn.up_frames is not None:
                for msg in conn.up_frames.feed(data):
                    if not await self._forward_pg(conn, msg):
                        return
            elif not await self._forward_raw(conn, data):
                return
            if conn.closed:
                return
            await conn.server.drain()

    async def _fire(self, conn: _Conn, text: bytes) -> Trigger | None:
        for trigger in self.triggers:
            if trigger._take(conn, text):
                if trigger.fault is Fault.HOLD:
                    await trigger._released.wait()
                    await conn.flowing()
                    continue
                conn.fired = trigger
                return trigger
        return None

    async def _forward_raw(self, conn: _Conn, data: bytes) -> bool:
        assert conn.server is not None
        window = conn.tail + data
        keep = max((len(t.pattern) for t in self.triggers), default=1) - 1
        conn.tail = window[-keep:] if keep else b""
        trigger = await self._fire(conn, window) if self.triggers else None
        if trigger is not None and trigger.fault is Fault.DROP:
            conn.cut()
            return False
        if trigger is not None and trigger.fault is Fault.LOSE_REPLY:
            conn.swallow_until = "any"
        conn.server.write(data)
        return True

    async def _forward_pg(self, conn: _Conn, msg: bytes) -> bool:
        assert conn.server is not None and conn.sql is not None and conn.down_frames is not None
        if conn.uncommitted and msg == _SYNC:
            # The statement ran in an implicit transaction: ask for its result without the
            # Sync that would commit it; the downstream pump cuts once the result arrives.
            conn.server.write(_FLUSH)
            return True
        assert conn.up_frames is not None
        if conn.up_frames.raw:  # encrypted: nothing to match
            conn.server.write(msg)
            return True
        if conn.up_frames.asked_encryption:
            conn.up_frames.asked_encryption = False
            conn.down_frames.single_byte_reply = True
        text = conn.sql.executes(msg)
        if text is not None:
            self.executed.append(text)
            trigger = await self._fire(conn, text) if self.triggers else None
            if trigger is not None:
                # A simple Query outside BEGIN commits by itself: "never committed" can only
                # mean "never run" for it.
                if trigger.fault is Fault.DROP or (
                    trigger.fault is Fault.UNCOMMITTED and msg[:1] == b"Q"
                ):
                    conn.cut()
                    return False
                if trigger.fault is Fault.UNCOMMITTED:
                    conn.uncommitted = True
                    conn.swallow_until = "result"
                else:
                    conn.swallow_until = "ready"
        conn.server.write(msg)
        return True

    async def _downstream(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                if conn.client.can_write_eof() and not conn.closed:
                    conn.client.write_eof()
                return
            await conn.flowing()
            if conn.down_frames is not None:
                negotiating = conn.down_frames.single_byte_reply
                msgs = conn.down_frames.feed(data)
                if negotiating and msgs and msgs[0] in (b"S", b"G"):
                    # TLS/GSS encryption follows: frames are no longer visible
                    assert conn.up_frames is not None
                    conn.down_frames.raw = conn.up_frames.raw = True
            else:
                msgs = [data]
            for msg in msgs:
                if conn.swallow_until is None:
                    conn.client.write(msg)
                    continue
                # Swallowed: the client never sees the outcome of what the trigger let through.
                if conn.fired is not None:
                    if conn.down_frames is None:
                        conn.fired.swallowed.append(msg)
                    elif msg[:1] == b"C":
                        conn.fired.swallowed.append(msg[5:].rstrip(b"\x00"))
                    elif msg[:1] == b"E":
                        conn.fired.swallowed.append(b"ERROR")
                done = (
                    conn.swallow_until == "any"
                    or (conn.swallow_until == "result" and msg[:1] in (b"C", b"E"))
                    or (conn.swallow_until == "ready" and msg[:1] == b"Z")
                )
                if done:
                    conn.cut()
                    return
            await conn.client.drain()
