"""A production ``watcher run`` refuses a network it would not follow, however the RPC
URL list comes out empty."""

from __future__ import annotations

from pathlib import Path

import pytest

from devkit import cli_env
from watcher import errors, startup
from watcher.settings import load_settings

ADMIN = "Vq3m9T_x2Lk8-WcR4pZ7sN1bJ6dF0hY5gE2aU8oI3eQ"  # 256 bits
ADDRESS = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cli_env.clear(monkeypatch, tmp_path)  # no stray variables or .env


@pytest.mark.parametrize("rpc", [",", " , ,"])
def test_an_rpc_list_of_only_commas_is_a_network_not_followed(rpc: str) -> None:
    # Base is followed; Ethereum has its address and an RPC "list" with no URL in it,
    # which the follower reads as none: production must not start and leave it unwatched.
    s = load_settings(
        watcher_env="production",
        x402_admin_key=ADMIN,
        x402_base_payment_address=ADDRESS,
        x402_base_rpc_url="https://base.example.com",
        x402_ethereum_payment_address=ADDRESS,
        x402_ethereum_rpc_url=rpc,
    )
    assert [c.name for c in s.evm_chains() if c.enabled] == ["base"]
    with pytest.raises(errors.ConfigError) as exc:
        startup.refuse_unfollowed(s)
    (line,) = exc.value.problems
    assert line.startswith("X402_ETHEREUM_RPC_URL: holds no URL, so Ethereum is not followed")


def test_every_network_set_up_whole_starts() -> None:
    s = load_settings(
        watcher_env="production",
        x402_admin_key=ADMIN,
        x402_base_payment_address=ADDRESS,
        x402_base_rpc_url="https://base.example.com,https://base2.example.com",
    )
    startup.refuse_unfollowed(s)  # nothing to refuse
    assert startup.unfollowed(s) == []
