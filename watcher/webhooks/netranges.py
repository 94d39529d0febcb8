"""The address ranges a webhook may not reach, each with the name a refusal shows.

``NEVER`` holds what no allow-list opens (cloud metadata services, "this host",
multicast, broadcast): none of them is a webhook receiver. ``REFUSED`` holds what the
operator may open with ``WATCHER_WEBHOOK_ALLOW_NETWORKS``. Whatever these tables miss,
an address Python does not call global is refused as "not a public address".
Sources: the IANA special-purpose address registries (IPv4 and IPv6).
``host_address`` reads the address a URL host spells, in the spellings resolvers take.
"""

from __future__ import annotations

import ipaddress
import re

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Table = tuple[tuple[IpNetwork, str], ...]

_NUMBER_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+", re.IGNORECASE)


def _table(*rows: tuple[str, str]) -> Table:
    return tuple((ipaddress.ip_network(cidr), name) for cidr, name in rows)


_METADATA = "a cloud metadata service"

NEVER = _table(
    ("169.254.169.254/32", _METADATA + " (AWS, GCP, Azure, OpenStack)"),
    ("169.254.170.2/32", _METADATA + " (AWS ECS task credentials)"),
    ("169.254.169.253/32", "a cloud DNS resolver (AWS)"),
    ("100.100.100.200/32", _METADATA + " (Alibaba Cloud)"),
    ("192.0.0.192/32", _METADATA + " (Oracle Cloud)"),
    ("fd00:ec2::254/128", _METADATA + " (AWS, IPv6)"),
    ("0.0.0.0/8", "unspecified ('this host': a dial reaches this machine)"),
    ("::/128", "unspecified ('this host': a dial reaches this machine)"),
    ("255.255.255.255/32", "broadcast"),
    ("224.0.0.0/4", "multicast"),
    ("ff00::/8", "multicast"),
)

REFUSED = _table(
    ("127.0.0.0/8", "loopback (this machine)"),
    ("::1/128", "loopback (this machine)"),
    ("10.0.0.0/8", "private (10.0.0.0/8)"),
    ("172.16.0.0/12", "private (172.16.0.0/12)"),
    ("192.168.0.0/16", "private (192.168.0.0/16)"),
    ("100.64.0.0/10", "carrier-grade NAT (100.64.0.0/10)"),
    ("169.254.0.0/16", "link-local (169.254.0.0/16)"),
    ("fe80::/10", "link-local (fe80::/10)"),
    ("fc00::/7", "unique-local (fc00::/7)"),
    ("fec0::/10", "site-local (fec0::/10, deprecated)"),
    ("192.0.0.0/24", "reserved for IETF protocols (192.0.0.0/24)"),
    ("192.0.2.0/24", "documentation (192.0.2.0/24)"),
    ("198.51.100.0/24", "documentation (198.51.100.0/24)"),
    ("203.0.113.0/24", "documentation (203.0.113.0/24)"),
    ("2001:db8::/32", "documentation (2001:db8::/32)"),
    ("3fff::/20", "documentation (3fff::/20)"),
    ("198.18.0.0/15", "benchmarking (198.18.0.0/15)"),
    ("2001:2::/48", "benchmarking (2001:2::/48)"),
    ("192.88.99.0/24", "a 6to4 relay (192.88.99.0/24, deprecated)"),
    ("240.0.0.0/4", "reserved (240.0.0.0/4)"),
    # Tunnels that carry an IPv4 address inside: where they land is not ours to judge.
    ("2002::/16", "6to4 (2002::/16, deprecated)"),
    ("2001::/32", "Teredo (2001::/32)"),
    ("64:ff9b:1::/48", "local-use NAT64 (64:ff9b:1::/48)"),
    ("::/96", "IPv4-compatible (::/96, deprecated)"),
    ("100::/64", "discard-only (100::/64)"),
)

# The well-known NAT64 prefix: 64:ff9b::a.b.c.d reaches a.b.c.d, so that is judged.
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# IPv6 unicast on the internet (RFC 4291); outside it (NAT64 aside) nothing is a public
# receiver, whatever ``is_global`` says: it calls ::ffff:0:7f00:1, the IPv4-translated
# spelling of 127.0.0.1 (RFC 2765), global.
GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")

METADATA_NAMES = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
    }
)


def lookup(ip: IpAddress, table: Table) -> str | None:
    """The name of the first row of ``table`` holding ``ip``, or None."""
    for net, name in table:
        if ip.version == net.version and ip in net:
            return name
    return None


def kind(ip: IpAddress) -> str | None:
    """Why ``ip`` is not a public address (None when it is one)."""
    name = lookup(ip, REFUSED)
    if name is not None:
        return name
    if isinstance(ip, ipaddress.IPv6Address) and ip in NAT64:
        inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        inner_kind = lookup(inner, NEVER) or kind(inner)
        return None if inner_kind is None else f"NAT64 for {inner}, {inner_kind}"
    if isinstance(ip, ipaddress.IPv6Address) and ip not in GLOBAL_UNICAST:
        return "outside IPv6 global unicast (2000::/3)"
    if not ip.is_global:
        return "not a public address"
    return None


def host_address(host: str) -> IpAddress | None:
    """The address a host spells, in any spelling a resolver would accept; None for a
    name. A host whose last label is a number is an IPv4 address or nothing."""
    if host.startswith("[") or ":" in host:
        text = host.strip("[]")
        if "%" in text:
            raise ValueError("an IPv6 zone id (%...) in the URL; give a routable address or a name")
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()  # one trailing dot: the same host to a resolver
    if not _NUMBER_LABEL.fullmatch(labels[-1]):
        return None
    return _ipv4_spelling(host, labels)


def _ipv4_spelling(host: str, labels: list[str]) -> ipaddress.IPv4Address:
    """inet_aton's rules (and the URL standard's): 1 to 4 numbers, each decimal, octal
    (a leading 0) or hex (0x); the last fills the bytes left (127.1 = 127.0.0.1)."""
    bad = ValueError(f"{host!r} is neither a name nor an IPv4 address; give a name or a.b.c.d")
    if len(labels) > 4 or not all(_NUMBER_LABEL.fullmatch(label) for label in labels):
        raise bad
    try:
        numbers = [_ipv4_number(label) for label in labels]
    except ValueError:
        raise bad from None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        raise bad
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _ipv4_number(label: str) -> int:
    if label[:2].lower() == "0x":
        return int(label[2:] or "0", 16)
    if len(label) > 1 and label.startswith("0"):
        return int(label[1:], 8)
    return int(label, 10)
