"""Spellings of private addresses netguard once let through (tests/integration/
test_attacks_events.py holds the other attacks of issue 14)."""

from __future__ import annotations

import pytest

from watcher.webhooks import netguard

PROD = netguard.Policy(production=True)


@pytest.mark.parametrize(
    "address",
    [
        "::ffff:0:7f00:1",  # IPv4-translated (RFC 2765 SIIT) 127.0.0.1
        "::ffff:0:a9fe:a9fe",  # ... and 169.254.169.254: a translator lands there
        "::ffff:0:a00:1",  # ... and 10.0.0.1
        "5f00::1",  # SRv6 SIDs (RFC 9602): not a host on the internet
        "4000::1",  # unassigned, outside global unicast (2000::/3)
        "e000::1",
    ],
)
def test_ipv6_outside_global_unicast_is_refused(address: str) -> None:
    """IPv6 unicast on the internet is 2000::/3 (with the NAT64 prefix judged by the
    IPv4 address inside); the rest Python's is_global calls public was let through,
    among it the IPv4-translated form of loopback and of the metadata address."""
    with pytest.raises(netguard.Refused):
        netguard.check_address(address, PROD)
    with pytest.raises(netguard.Refused):
        netguard.check_url(f"https://[{address}]/hook", PROD)


def test_global_unicast_and_public_nat64_still_pass() -> None:
    for address in ("2606:4700::1111", "2a00:1450:4001::200e", "64:ff9b::808:808"):
        assert str(netguard.check_address(address, PROD)) == address
