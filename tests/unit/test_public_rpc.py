"""The list of free public RPC endpoints the doctor flags: matched by host, keyed URLs spared."""

from __future__ import annotations

import pytest

from watcher.doctor import public_rpc

PUBLIC = [
    "https://mainnet.base.org",
    "https://sepolia.base.org/",
    "wss://mainnet.base.org",
    "https://api.mainnet-beta.solana.com",
    "wss://api.devnet.solana.com/",
    "https://cloudflare-eth.com/v1/mainnet",
    "https://eth.llamarpc.com",
    "https://rpc.ankr.com/eth",
    "https://rpc.ankr.com/base_sepolia",
    "https://ethereum-rpc.publicnode.com",
    "https://base-sepolia-rpc.publicnode.com",
    "https://1rpc.io/eth",
    "https://MAINNET.BASE.ORG.",  # hosts are case-insensitive, a trailing dot is the same host
    "https://mainnet.gateway.tenderly.co",
    # What the HTTP client connects to, however it is spelled: a port, credentials, the
    # ideographic full stop (httpx's IDNA reads it as a dot and connects to the public host).
    "https://mainnet.base.org:443/",
    "https://user:pw@mainnet.base.org",
    "https://mainnet\u3002base\u3002org",
]
KEYED_OR_OTHER = [
    "https://base-mainnet.g.alchemy.com/v2/KEY",
    "https://mainnet.infura.io/v3/KEY",
    "https://rpc.ankr.com/eth/0123456789abcdef",  # Ankr's keyed form: the key in the path
    "https://eth.llamarpc.com/rpc/KEY",
    "https://1rpc.io/KEY/eth",
    "https://mainnet.gateway.tenderly.co/KEY",
    "https://mainnet.base.org.attacker.example",  # host match, never a substring
    "https://notpublicnode.com",
    "https://mainnet.helius-rpc.com/?api-key=KEY",
    "http://127.0.0.1:8545",
]


@pytest.mark.parametrize("url", PUBLIC)
def test_known_public_endpoints_are_matched(url: str) -> None:
    found = public_rpc.match(url)
    assert found is not None and found.source and found.operator, url


@pytest.mark.parametrize("url", KEYED_OR_OTHER)
def test_keyed_and_other_urls_are_not(url: str) -> None:
    assert public_rpc.match(url) is None, url


def test_every_row_cites_a_source_and_hosts_are_unique() -> None:
    hosts = [row.host for row in public_rpc.KNOWN]
    assert len(hosts) == len(set(hosts))
    assert all(row.source and row.operator for row in public_rpc.KNOWN)
