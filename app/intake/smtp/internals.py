"""The private parts of asyncio and aiosmtpd the sink relies on, each named once.

asyncio's ``StreamReader`` has no public way to push bytes back or to drop them (its buffer is a
bytearray; aiosmtpd clears it itself after STARTTLS). aiosmtpd's ``SMTP`` has no public hook for
its per-command timeout, the call of a handler hook, the reset after DATA, its TLS state or its
reader. :class:`AiosmtpdSession` gives each a public name; subclasses use only those. It also
replaces aiosmtpd's address parsing with a faster one that returns the same.
:func:`problems` says what no longer matches the versions pinned in pyproject.toml (aiosmtpd
1.4.x, CPython 3.11+): the sink refuses to start then, and a test runs it on every change.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import Any, Final

from aiosmtpd.smtp import SMTP

_ATEXT: Final = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+"
# ``<local@domain>`` with both parts dot-atoms of ASCII atext, then spaces: the path nearly every
# MAIL and RCPT carries, which email's parser reads the same way (tested against aiosmtpd).
_SIMPLE_PATH: Final = re.compile(
    rf"[ \t]*<({_ATEXT}(?:\.{_ATEXT})*@{_ATEXT}(?:\.{_ATEXT})*)>[ \t]*"
)
_NULL_PATH: Final = re.compile(r"[ \t]*<>")


def _buffer_of(reader: asyncio.StreamReader) -> bytearray:
    buffer = getattr(reader, "_buffer", None)
    if not isinstance(buffer, bytearray):
        raise RuntimeError("asyncio.StreamReader keeps its buffer elsewhere: see " + __name__)
    return buffer


def unread(reader: asyncio.StreamReader, data: bytes | bytearray) -> None:
    """Put ``data`` back in front of what ``reader`` holds unread."""
    _buffer_of(reader)[:0] = data


def drop_unread(reader: asyncio.StreamReader) -> None:
    """Forget every byte ``reader`` holds unread (commands pipelined behind a closing reply)."""
    _buffer_of(reader).clear()


class AiosmtpdSession(SMTP):
    """aiosmtpd's protocol with its private parts under public names."""

    @property
    def first_transport(self) -> bool:
        """True until STARTTLS has replaced the transport (``connection_made`` runs again)."""
        return self._original_transport is None

    @property
    def tls_active(self) -> bool:
        return self._tls_protocol is not None

    @property
    def reader(self) -> asyncio.StreamReader:
        reader: asyncio.StreamReader = self._reader
        return reader

    def cancel_session(self) -> None:
        """Stop the coroutine reading and answering commands."""
        if self._handler_coroutine is not None:
            self._handler_coroutine.cancel()

    def reset_after_data(self) -> None:
        """A fresh envelope, as after any DATA."""
        self._set_post_data_state()  # type: ignore[no-untyped-call]

    def on_command_timeout(self) -> None:
        """No complete command within the timeout (aiosmtpd restarts the timer per command)."""
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    async def call_handler_hook(self, command: str, *args: Any) -> Any:
        """Call the handler's ``handle_<command>`` hook (MISSING when it has none)."""
        return await super()._call_handler_hook(command, *args)

    def _timeout_cb(self) -> None:
        self.on_command_timeout()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """The address of a MAIL or RCPT argument and the rest (its parameters), as aiosmtpd's
        own ``_getaddr`` returns them, which defines a ``typing.Protocol`` class on every call
        (~45 µs, twice per message). The common paths are read by a regular expression; anything
        else by the same parser aiosmtpd uses."""
        if not arg:
            return "", ""
        null = _NULL_PATH.match(arg)
        if null is not None:
            return "<>", arg[null.end() :]
        simple = _SIMPLE_PATH.match(arg)
        if simple is not None and not arg.startswith("(", simple.end()):
            addr: str = simple.group(1)
            rest = arg[simple.end() :]
        else:
            parse = get_angle_addr if arg.lstrip().startswith("<") else get_addr_spec
            try:
                address, rest = parse(arg)
            except HeaderParseError:
                return None, None
            addr = address.addr_spec
        if self.local_part_limit and len(addr.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return addr, rest

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        return await self.call_handler_hook(command, *args)


# Private methods used or overridden above, with the parameters they take.
_METHODS = {
    "_timeout_cb": ["self"],
    "_getaddr": ["self", "arg"],
    "_call_handler_hook": ["self", "command", "args"],
    "_set_post_data_state": ["self"],
}
# Set by SMTP.__init__ (``_reader`` by connection_made, checked on a live connection by the tests).
_ATTRIBUTES = ("_original_transport", "_tls_protocol", "_handler_coroutine")


def problems(loop: asyncio.AbstractEventLoop) -> list[str]:
    """What of the internals above is missing or changed in the installed libraries."""
    found = []
    for name, params in _METHODS.items():
        method = getattr(SMTP, name, None)
        if method is None:
            found.append(f"aiosmtpd: SMTP.{name} is gone")
        elif list(inspect.signature(method).parameters) != params:
            found.append(f"aiosmtpd: SMTP.{name} takes {inspect.signature(method)}")
    session = SMTP(handler=object(), loop=loop)
    found += [f"aiosmtpd: SMTP().{a} is gone" for a in _ATTRIBUTES if not hasattr(session, a)]
    if not isinstance(getattr(asyncio.StreamReader(loop=loop), "_buffer", None), bytearray):
        found.append("asyncio: StreamReader()._buffer is not a bytearray")
    return found
