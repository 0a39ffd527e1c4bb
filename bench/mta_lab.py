"""A loopback lab in which a real MTA delivers to a remote MX whose every reply we chose.

Pieces (all on 127.0.0.0/8, nothing leaves the machine):

* ``LabDns``: a tiny DNS server on 127.0.0.1:53 for the ``.example`` names of the lab (MX and A
  records, a null MX as RFC 7505 §3 writes it, NXDOMAIN for an unknown domain); every other
  question is relayed unchanged to the nameserver the machine had, so the rest of the machine keeps
  resolving while ``/etc/resolv.conf`` points at the lab (``resolver_pointed_at_lab``).
* ``ScriptedMx``: the recipients' MX (aiosmtpd on 127.0.0.2:25).  The local part of a recipient
  picks its reply, at RCPT or at end of DATA, from ``CASES``.
* a refusing MX on 127.0.0.4:25 that greets with 421 (a connection-level rate limit).
* ``DsnSink``: the sender domain's MX (aiosmtpd on 127.0.0.3:25); it keeps every message it gets,
  byte for byte (``envelope.original_content``), one ``.eml`` file each: the DSNs the MTA wrote.

``Case`` is the known truth: which outcomes of ``stoplist parse`` are right for that recipient.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

SENDER: Final = "sender@sender.example"
MX_IP: Final = "127.0.0.2"
SINK_IP: Final = "127.0.0.3"
REFUSER_IP: Final = "127.0.0.4"
DNS_IP: Final = "127.0.0.1"
RESOLV_CONF: Final = Path("/etc/resolv.conf")


@dataclass(frozen=True)
class Case:
    """One recipient and what a right reading of its DSN says.

    ``expect`` holds the outcomes counted as right; ``None`` means the message is delivered and no
    DSN (and so no result) should name the recipient.
    """

    name: str
    address: str
    rcpt_reply: str | None  # the MX's answer to RCPT TO (None: 250)
    data_reply: str | None  # the MX's answer at end of DATA (None: 250)
    expect: frozenset[str] | None
    expires: bool = False  # only a temporary failure: the DSN comes when the queue lifetime ends

    @property
    def local_part(self) -> str:
        return self.address.split("@", 1)[0]


def _case(
    name: str,
    address: str,
    expect: set[str] | None,
    rcpt: str | None = None,
    data: str | None = None,
    expires: bool = False,
) -> Case:
    return Case(name, address, rcpt, data, None if expect is None else frozenset(expect), expires)


HARD: Final = {"hard"}
SOFT: Final = {"soft"}
POLICY: Final = {"policy"}
NOT_HARD: Final = {"soft", "policy"}

CASES: Final[tuple[Case, ...]] = (
    _case(
        "user-unknown",
        "alice.unknown@remote.example",
        HARD,
        rcpt="550 5.1.1 <alice.unknown@remote.example>: Recipient address rejected: User unknown in virtual mailbox table",
    ),
    _case(
        "mailbox-full-5xx",
        "bob.full@remote.example",
        SOFT,
        rcpt="552 5.2.2 <bob.full@remote.example>: Mailbox full, quota exceeded",
    ),
    _case(
        "mailbox-full-4xx",
        "carol.full@remote.example",
        SOFT,
        rcpt="452 4.2.2 <carol.full@remote.example>: Mailbox full, try again later",
        expires=True,
    ),
    _case("host-unknown", "dave@nohost.example", HARD),
    _case("null-mx", "erin@nullmx.example", HARD),
    _case(
        "greylisted",
        "frank.grey@remote.example",
        NOT_HARD,
        rcpt="451 4.7.1 <frank.grey@remote.example>: Recipient address rejected: Greylisted, please try again in 300 seconds",
        expires=True,
    ),
    _case(
        "spam-block",
        "grace.spam@remote.example",
        POLICY,
        data="554 5.7.1 Message rejected: message content looks like spam",
    ),
    _case(
        "dmarc",
        "heidi.dmarc@remote.example",
        POLICY,
        data="550 5.7.26 Unauthenticated email from sender.example is not accepted due to domain's DMARC policy",
    ),
    _case(
        "rate-limit-450",
        "ivan.rate@remote.example",
        NOT_HARD,
        rcpt="450 4.7.0 <ivan.rate@remote.example>: Too many messages from your IP, rate limited; try again later",
        expires=True,
    ),
    _case("rate-limit-421", "judy@throttled.example", NOT_HARD, expires=True),
    _case(
        "temp-failure",
        "mallory.busy@remote.example",
        SOFT,
        rcpt="451 4.3.0 <mallory.busy@remote.example>: Temporary lookup failure",
        expires=True,
    ),
    _case("delivered", "oscar.ok@remote.example", None),
)

REFUSER_GREETING: Final = "421 4.7.0 mx.throttled.example Too many concurrent connections from your IP; try again later\r\n"

# name -> (MX records as (preference, exchange), A record); a missing name under .example is NXDOMAIN
ZONE: Final[dict[str, tuple[list[tuple[int, str]], str | None]]] = {
    "remote.example": ([(10, "mx.remote.example")], None),
    "mx.remote.example": ([], MX_IP),
    "sender.example": ([(10, "mx.sender.example")], None),
    "mx.sender.example": ([], SINK_IP),
    "throttled.example": ([(10, "mx.throttled.example")], None),
    "mx.throttled.example": ([], REFUSER_IP),
    "nullmx.example": ([(0, "")], None),  # RFC 7505: a single MX of preference 0 and exchange "."
    "mta.lab.example": ([], "127.0.0.1"),
}
_OWNED_SUFFIXES: Final = (".example", "127.in-addr.arpa")


# --- DNS -------------------------------------------------------------------------------------


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.strip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\x00"


def _read_question(packet: bytes) -> tuple[str, int, int]:
    """The first question's name, type and the offset just past it."""
    labels: list[str] = []
    offset = 12
    while packet[offset]:
        length = packet[offset]
        labels.append(packet[offset + 1 : offset + 1 + length].decode("ascii", "replace"))
        offset += 1 + length
    qtype = struct.unpack("!H", packet[offset + 1 : offset + 3])[0]
    return ".".join(labels).lower(), qtype, offset + 5


def answer_from_zone(packet: bytes) -> bytes | None:
    """The lab's reply to ``packet``, or ``None`` when the name is not the lab's to answer."""
    try:
        name, qtype, end = _read_question(packet)
    except (IndexError, struct.error):
        return None
    if not (name.endswith(_OWNED_SUFFIXES) or name in ("example", "in-addr.arpa")):
        return None
    ident, flags = struct.unpack("!HH", packet[:4])
    rd = flags & 0x0100
    question = packet[12:end]
    records = ZONE.get(name)
    if records is None:
        header = struct.pack("!HHHHHH", ident, 0x8000 | 0x0400 | rd | 0x0080 | 3, 1, 0, 0, 0)
        return header + question
    mx_records, a_record = records
    answers: list[bytes] = []
    if qtype == 15:  # MX
        for preference, exchange in mx_records:
            rdata = struct.pack("!H", preference) + _encode_name(exchange)
            answers.append(struct.pack("!HHHIH", 0xC00C, 15, 1, 60, len(rdata)) + rdata)
    elif qtype == 1 and a_record:  # A
        rdata = socket.inet_aton(a_record)
        answers.append(struct.pack("!HHHIH", 0xC00C, 1, 1, 60, len(rdata)) + rdata)
    header = struct.pack("!HHHHHH", ident, 0x8000 | 0x0400 | rd | 0x0080, 1, len(answers), 0, 0)
    return header + question + b"".join(answers)


class _Relay(asyncio.DatagramProtocol):
    def __init__(self, done: asyncio.Future[bytes]) -> None:
        self.done = done

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.done.done():
            self.done.set_result(data)


class LabDns(asyncio.DatagramProtocol):
    """Answers the lab's names; relays every other question to ``upstream``."""

    def __init__(self, upstream: str | None) -> None:
        self.upstream = upstream
        self.transport: asyncio.DatagramTransport | None = None
        self._relays: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        reply = answer_from_zone(data)
        if reply is not None:
            assert self.transport is not None
            self.transport.sendto(reply, addr)
        elif self.upstream:
            task = asyncio.ensure_future(self._relay(data, addr))
            self._relays.add(task)
            task.add_done_callback(self._relays.discard)

    async def _relay(self, data: bytes, addr: Any) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bytes] = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Relay(done), remote_addr=(self.upstream, 53)
        )
        try:
            transport.sendto(data)
            reply = await asyncio.wait_for(done, 5)
            if self.transport is not None:
                self.transport.sendto(reply, addr)
        except TimeoutError:
            pass
        finally:
            transport.close()


def upstream_nameserver(text: str) -> str | None:
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver" and parts[1] != DNS_IP:
            return parts[1]
    return None


@contextlib.contextmanager
def resolver_pointed_at_lab() -> Iterator[None]:
    """Point the system resolver at the lab's DNS, and put the old file back whatever happens."""
    saved = RESOLV_CONF.read_text()
    RESOLV_CONF.write_text(f"nameserver {DNS_IP}\noptions timeout:2 attempts:2\n")
    try:
        yield
    finally:
        RESOLV_CONF.write_text(saved)


# --- SMTP ------------------------------------------------------------------------------------

_BY_LOCAL_PART: Final = {case.address: case for case in CASES}


class ScriptedMxHandler:
    """The remote MX: each recipient gets the reply its case names."""

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        case = _BY_LOCAL_PART.get(address.lower())
        if case is not None and case.rcpt_reply:
            return case.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        for address in envelope.rcpt_tos:
            case = _BY_LOCAL_PART.get(address.lower())
            if case is not None and case.data_reply:
                return case.data_reply
        return "250 2.0.0 Ok: queued as 4LAB0000"


@dataclass
class DsnSinkHandler:
    """The sender domain's MX: every message it receives is a DSN (or a delay notice) to keep."""

    folder: Path
    received: list[Path] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"dsn-{len(self.received) + 1:03d}.eml"
            raw = envelope.original_content or b""
            path.write_bytes(raw if isinstance(raw, bytes) else raw.encode())
            self.received.append(path)
        return "250 2.0.0 Ok: kept"

    def take(self) -> list[Path]:
        with self.lock:
            return list(self.received)

    def switch(self, folder: Path) -> None:
        with self.lock:
            self.folder = folder
            self.received = []


async def _refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(REFUSER_GREETING.encode())
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()


class Lab:
    """DNS, the scripted MX, the refusing MX and the DSN sink, started and stopped together."""

    def __init__(self, sink_folder: Path) -> None:
        self.sink = DsnSinkHandler(sink_folder)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._controllers: list[Controller] = []
        self._closers: list[Any] = []

    def start(self) -> None:
        upstream = upstream_nameserver(RESOLV_CONF.read_text())
        self._thread.start()

        async def serve() -> None:
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda: LabDns(upstream), local_addr=(DNS_IP, 53)
            )
            self._closers.append(transport)
            server = await asyncio.start_server(_refuse, REFUSER_IP, 25)
            self._closers.append(server)

        asyncio.run_coroutine_threadsafe(serve(), self._loop).result(10)
        for handler, ip, name in (
            (ScriptedMxHandler(), MX_IP, "mx.remote.example"),
            (self.sink, SINK_IP, "mx.sender.example"),
        ):
            controller = Controller(
                handler, hostname=ip, port=25, server_hostname=name, decode_data=False
            )
            controller.start()
            self._controllers.append(controller)

    def stop(self) -> None:
        for controller in self._controllers:
            with contextlib.suppress(Exception):
                controller.stop()

        async def close() -> None:
            for closer in self._closers:
                closer.close()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


def test_message(case: Case, token: str) -> bytes:
    """The message sent to ``case``: plain, small, with the case named in the subject."""
    return (
        f"From: Lab Sender <{SENDER}>\r\n"
        f"To: <{case.address}>\r\n"
        f"Subject: lab case {case.name}\r\n"
        f"Message-ID: <{token}.{case.name}@sender.example>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        f"A test message for the {case.name} case.\r\n"
    ).encode()
