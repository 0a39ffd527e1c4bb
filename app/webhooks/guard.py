"""The SSRF guard of outbound requests: a webhook target must be ``https`` and every address its
host resolves to must be public (not loopback, private, link-local, shared, multicast, reserved or
unspecified; IPv4-mapped IPv6 is judged by its IPv4 address), unless the address lies in
``STOPLIST_WEBHOOK_ALLOWED_NETWORKS``, where plain ``http`` is allowed too.

The check runs when a subscription is saved and again before every request, on the addresses
the request then connects to (``Target.addresses``): a name that re-resolves to an internal
address after it was saved (DNS rebinding) is refused at send time. A host written as an IP
address is not looked up (it connects to that address, nothing can rebind it): it is judged as
it stands, which spares every request to it a resolver call in the loop's thread pool.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Ranges Python's is_global does not flag but that are not the public internet either.
_EXTRA_BLOCKED = tuple(
    ipaddress.ip_network(n) for n in ("100.64.0.0/10", "192.0.0.0/24", "64:ff9b:1::/48")
)


class TargetRefused(InvalidInput):
    """A webhook URL the guard will not send to (422 when saving one)."""

    error = "target_refused"


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str  # as written (IDNA-encoded), without brackets
    port: int
    path: str  # path and query
    addresses: tuple[str, ...]  # every address the host resolved to, all allowed

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def url_for(self, address: str) -> str:
        """The URL that connects to ``address`` (the Host header and TLS name stay ``host``)."""
        ip = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{ip}:{self.port}{self.path}"


def parse_networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in net for net in _EXTRA_BLOCKED):
        return False
    return ip.is_global and not ip.is_multicast


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of a webhook URL; 422 naming the problem."""
    if len(url) > 2000:
        raise TargetRefused("the URL is longer than 2000 characters")
    if not url.isprintable() or " " in url:
        # Would split the request line or inject a header.
        raise TargetRefused("the URL holds spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise TargetRefused("the URL must be https://")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("credentials in the URL are not allowed")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise TargetRefused("the URL has no host")
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise TargetRefused(f"host {host!r} is not a valid name") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, host, port or (443 if scheme == "https" else 80), path


async def resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise TargetRefused(f"host {host!r} does not resolve: {exc}") from None
    return sorted({str(info[4][0]) for info in infos})


def judge(scheme: str, host: str, addresses: Sequence[str], allowed: Sequence[Network]) -> None:
    """Refuse unless every address is public (https only) or in an allowed network."""
    if not addresses:
        raise TargetRefused(f"host {host!r} has no address")
    inside = []
    for text in addresses:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
        if any(ip.version == net.version and ip in net for net in allowed):
            inside.append(True)
            continue
        if not _public(ip):
            raise TargetRefused(
                f"host {host!r} resolves to {ip}, a loopback, private, link-local or reserved "
                "address (allow it with STOPLIST_WEBHOOK_ALLOWED_NETWORKS)"
            )
        inside.append(False)
    if scheme != "https" and not all(inside):
        raise TargetRefused("the URL must be https:// (http only for allowed networks)")


@functools.lru_cache(maxsize=4096)
def literal_address(host: str) -> str | None:
    """``host`` as an address when it is written as one (``192.0.2.1``, ``2001:db8::1``), else
    None. Only the usual forms: ``127.1`` or ``0x7f.1`` are names here, which the resolver
    turns into addresses that are judged like any other."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


async def check_target(url: str, allowed: Sequence[Network]) -> Target:
    """Resolve ``url``'s host now (unless it is an address) and judge every address: the
    target to connect to."""
    scheme, host, port, path = split_url(url)
    literal = literal_address(host)
    addresses = [literal] if literal is not None else await resolve(host, port)
    judge(scheme, host, addresses, allowed)
    return Target(scheme, host, port, path, tuple(addresses))
