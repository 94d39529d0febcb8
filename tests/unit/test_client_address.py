"""Resolving the client behind proxies, and the bucket it is counted in (api/clientip.py)."""

from __future__ import annotations

import pytest

from api import clientip
from watcher import errors
from watcher.settings import load_settings, parse_networks

PROXIES = parse_networks("127.0.0.1, 10.0.0.0/8, fd00::/8")


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("192.0.2.1", ["198.51.100.1"], "192.0.2.1"),  # the peer is no proxy of ours
        ("127.0.0.1", [], "127.0.0.1"),  # a proxy of ours that forwards nothing
        ("127.0.0.1", ["198.51.100.1"], "198.51.100.1"),
        ("127.0.0.1", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),  # made-up hops on the left
        ("127.0.0.1", ["198.51.100.1, 10.1.2.3"], "198.51.100.1"),  # two proxies of ours
        ("127.0.0.1", ["6.6.6.6", "198.51.100.1"], "198.51.100.1"),  # two header lines
        ("127.0.0.1", ["10.0.0.5, 10.0.0.6"], "10.0.0.5"),  # all ours: the farthest hop
        ("127.0.0.1", ["junk"], "127.0.0.1"),
        ("127.0.0.1", ["198.51.100.1, junk"], "127.0.0.1"),  # junk reached on the walk
        ("127.0.0.1", ["junk, 198.51.100.1"], "198.51.100.1"),  # junk never reached
        ("127.0.0.1", ["198.51.100.1:443"], "127.0.0.1"),  # ports are not addresses
        ("127.0.0.1", ["fe80::1%eth0"], "127.0.0.1"),  # nor are zoned link-local ones
        ("127.0.0.1", ["::ffff:198.51.100.7"], "198.51.100.7"),
        ("::ffff:127.0.0.1", ["198.51.100.1"], "198.51.100.1"),  # a mapped proxy address
        ("fd00::1", ["2001:db8::1"], "2001:db8::1"),
        ("not an address", ["198.51.100.1"], None),
    ],
)
def test_resolve_walks_from_the_right(peer: str, forwarded: list[str], client: str | None) -> None:
    got = clientip.resolve(peer, forwarded, PROXIES)
    assert (str(got) if got is not None else None) == client


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    got = clientip.resolve("127.0.0.1", ["198.51.100.1"], ())
    assert str(got) == "127.0.0.1"


def test_a_long_header_is_read_only_to_its_last_hops() -> None:
    hops = ", ".join(["10.0.0.1"] * (clientip.MAX_HOPS + 5))
    got = clientip.resolve("127.0.0.1", ["198.51.100.1, " + hops], PROXIES)
    assert str(got) == "10.0.0.1"  # the client entry lies beyond the hops we read


@pytest.mark.parametrize(
    ("address", "bucket"),
    [
        ("198.51.100.1", "198.51.100.1"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.1", "198.51.100.1"),
    ],
)
def test_buckets_are_ipv4_addresses_and_ipv6_64s(address: str, bucket: str) -> None:
    parsed = clientip.parse_ip(address)
    assert parsed is not None and clientip.bucket(parsed) == bucket


@pytest.mark.parametrize("value", ["10.0.0.0/33", "localhost", "127.0.0.1,,nope", "10.0.0.1-5"])
def test_bad_trusted_proxies_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("WATCHER_TRUSTED_PROXIES", value)
    with pytest.raises(errors.ConfigError) as info:
        load_settings(_env_file=None)
    assert "WATCHER_TRUSTED_PROXIES" in str(info.value)


def test_trusted_proxies_parse_addresses_cidrs_and_mapped_ipv6() -> None:
    nets = parse_networks(" 127.0.0.1 , 10.0.0.0/8,::1, ::ffff:192.0.2.0/120")
    assert [str(n) for n in nets] == ["127.0.0.1/32", "10.0.0.0/8", "::1/128", "192.0.2.0/24"]
    assert parse_networks("") == ()
