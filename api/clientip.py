"""Who the client is, for per-client limits: the socket peer, or what trusted proxies say.

uvicorn's own ``proxy_headers`` is off (watcher/daemon.py): by default it
believes ``X-Forwarded-For`` from loopback, so any local process, or a local
proxy that passes the header through, could name itself anyone and walk past
every limit. Here the header counts only when the socket peer is one of
``WATCHER_TRUSTED_PROXIES``, and then it is read from the right: each proxy
appends the address it received the request from, so the entries right of the
client were written by proxies we trust, and everything left of the first
untrusted entry may be made up by the client. That first untrusted entry is
the client. A malformed entry reached on that walk means we cannot tell: the
peer (the proxy) is used.

Limits are counted per bucket: an IPv4 address, an IPv6 /64 (one subscriber
line is usually handed a whole /64, so per-address buckets would be free to
rotate), and an IPv4-mapped IPv6 address as the IPv4 it is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from watcher.settings import IpNetwork

MAX_HOPS = 32  # entries read from the right of X-Forwarded-For; a longer list is cut there

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: str) -> IpAddress | None:
    """A bare IPv4 or IPv6 address (IPv4-mapped IPv6 read as IPv4), or None."""
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id is not None:
            return None
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
    return addr


def _trusted(addr: IpAddress, proxies: Sequence[IpNetwork]) -> bool:
    return any(addr.version == net.version and addr in net for net in proxies)


def resolve(
    peer: str | None, forwarded: Iterable[str], proxies: Sequence[IpNetwork]
) -> IpAddress | None:
    """The client's address; ``forwarded`` is every X-Forwarded-For header value, in order."""
    peer_ip = parse_ip(peer) if peer else None
    if peer_ip is None or not proxies or not _trusted(peer_ip, proxies):
        return peer_ip
    hops = [h for value in forwarded for h in value.split(",")][-MAX_HOPS:]
    client = peer_ip
    for hop in reversed(hops):
        addr = parse_ip(hop)
        if addr is None:
            return peer_ip  # someone wrote junk where an address belongs: trust only the peer
        client = addr
        if not _trusted(addr, proxies):
            return addr
    return client  # every hop is a proxy of ours: the farthest one is the client


def bucket(addr: IpAddress) -> str:
    """The rate-limit key: the IPv4 address, or the IPv6 /64 it belongs to."""
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)
