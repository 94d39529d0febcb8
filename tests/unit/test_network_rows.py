"""Every registry row's variables, read from the environment by their documented names, and
the doctor's settings rows for each network added as a row (no I/O).

Parametrized over the registry, so a row added later is covered without a line changed.
The names are the ones ``watcher/chain_settings.py`` documents: ``X402_<ENV>_`` and a
suffix, ``<ENV>`` being the row's name upper-cased with ``-`` as ``_``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from solders.keypair import Keypair

from devkit import cli_env
from watcher import errors, networks
from watcher.doctor import config
from watcher.doctor.report import Check
from watcher.settings import Settings, load_settings

ROWS = list(networks.NETWORKS.values())
EVM = [r for r in ROWS if r.is_evm]
SOLANA = [r for r in ROWS if r.is_solana]
ADDED = [r for r in ROWS if r.name not in ("base", "ethereum", "solana")]

COMMON = ("PAYMENT_ADDRESS", "RPC_URL", "WS_URL")
EVM_SUFFIXES = (
    *COMMON, "CHAIN_ID", "USDC_ADDRESS", "CONFIRMATIONS", "START_BLOCK",
    "USDC_EIP712_NAME", "USDC_EIP712_VERSION",
)  # fmt: skip
SOLANA_SUFFIXES = (
    *COMMON, "USDC_MINT", "COMMITMENT", "TOKEN_ACCOUNTS", "NETWORK", "GENESIS_HASH",
    "FEE_PAYER_PRIVATE_KEY",
)  # fmt: skip
EVM_RECEIVER = "0x91A559D248a216d1dD17C4D39F51bdA9bd1DE7e2"
SOLANA_OWNER = "B2v68t8MXb9zUms1VQKuCcvjrjKDK6fLd8ZngqmBGy1M"
TWO_URLS = "https://rpc-a.example.com/v1/k,https://rpc-b.example.com"


def by_name(rows: list[networks.Network]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("row", rows, ids=[r.name for r in rows])


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cli_env.clear(monkeypatch, tmp_path)  # no stray variables or .env


def var(row: networks.Network, suffix: str) -> str:
    return f"X402_{row.env}_{suffix}"


def test_the_env_part_of_a_name() -> None:
    # The seven (a row added later joins ADDED and is tested the same way).
    assert [r.env for r in ADDED][:7] == [
        "ARBITRUM", "OPTIMISM", "POLYGON", "AVALANCHE", "BASE_SEPOLIA", "SEPOLIA", "SOLANA_DEVNET",
    ]  # fmt: skip


@by_name(ROWS)
def test_every_variable_of_a_row_exists_under_its_name(row: networks.Network) -> None:
    suffixes = EVM_SUFFIXES if row.is_evm else SOLANA_SUFFIXES
    fields = set(Settings.model_fields)
    assert {var(row, s).lower() for s in suffixes} <= fields


@by_name(EVM)
def test_an_evm_row_s_defaults_are_the_row_s(row: networks.Network) -> None:
    chain = load_settings().evm_chain(row.name)
    assert (chain.chain_id, chain.confirmations) == (row.chain_id, row.confirmations)
    assert chain.usdc == row.usdc.lower()
    assert chain.eip712_domain == (row.eip712_name, row.eip712_version)
    assert not chain.enabled


@by_name(SOLANA)
def test_a_solana_row_s_defaults_are_the_row_s(row: networks.Network) -> None:
    chain = load_settings().solana_chain(row.name)
    assert (chain.usdc_mint, chain.genesis_hash, chain.caip2) == (
        row.usdc,
        row.genesis_hash,
        row.caip2,
    )
    assert chain.commitment == row.commitment == "finalized"
    assert not chain.enabled


@by_name(EVM)
def test_an_evm_row_reads_its_environment_variables(
    row: networks.Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert row.confirmations is not None
    monkeypatch.setenv(var(row, "PAYMENT_ADDRESS"), EVM_RECEIVER)
    monkeypatch.setenv(var(row, "RPC_URL"), TWO_URLS)
    monkeypatch.setenv(var(row, "WS_URL"), "wss://ws.example.com")
    monkeypatch.setenv(var(row, "CONFIRMATIONS"), str(row.confirmations + 3))
    monkeypatch.setenv(var(row, "START_BLOCK"), "17")
    monkeypatch.setenv(var(row, "USDC_EIP712_NAME"), "Bridged USDC")
    settings = load_settings()
    chain = settings.evm_chain(row.name)
    assert chain.receivers == (EVM_RECEIVER.lower(),)
    assert chain.rpc_urls == tuple(TWO_URLS.split(","))
    assert chain.ws_urls == ("wss://ws.example.com",)
    assert (chain.confirmations, chain.start_block) == (row.confirmations + 3, 17)
    assert chain.eip712_domain == ("Bridged USDC", row.eip712_version)
    assert chain.enabled and chain.chain_id == row.chain_id
    # Only this row took the variables.
    assert [c.name for c in settings.evm_chains() if c.enabled] == [row.name]


@by_name(SOLANA)
def test_a_solana_row_reads_its_environment_variables(
    row: networks.Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    mint, account, fee_payer = str(Keypair().pubkey()), str(Keypair().pubkey()), Keypair()
    monkeypatch.setenv(var(row, "PAYMENT_ADDRESS"), SOLANA_OWNER)
    monkeypatch.setenv(var(row, "RPC_URL"), TWO_URLS)
    monkeypatch.setenv(var(row, "USDC_MINT"), mint)
    monkeypatch.setenv(var(row, "TOKEN_ACCOUNTS"), account)
    monkeypatch.setenv(var(row, "FEE_PAYER_PRIVATE_KEY"), str(fee_payer))
    settings = load_settings()
    chain = settings.solana_chain(row.name)
    assert (chain.owner, chain.usdc_mint, chain.token_accounts) == (SOLANA_OWNER, mint, (account,))
    assert chain.rpc_urls == tuple(TWO_URLS.split(","))
    assert settings.solana_fee_payer_address(row.name) == str(fee_payer.pubkey())
    assert [c.name for c in settings.solana_chains() if c.enabled] == [row.name]


@by_name(ADDED)
def test_a_bad_receiving_address_is_refused_by_its_variable(
    row: networks.Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = var(row, "PAYMENT_ADDRESS")
    monkeypatch.setenv(name, "0x91a559d248a216d1dD17C4D39F51bdA9bd1DE7e2")  # bad checksum
    with pytest.raises(errors.ConfigError) as caught:
        load_settings()
    (problem,) = caught.value.problems
    assert problem.startswith(name + ":"), problem


@by_name([r for r in ADDED if r.is_evm])
def test_unreadable_confirmations_name_the_variable(
    row: networks.Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = var(row, "CONFIRMATIONS")
    monkeypatch.setenv(name, "0")
    with pytest.raises(errors.ConfigError) as caught:
        load_settings()
    (problem,) = caught.value.problems
    assert problem.startswith(name + ":"), problem


# ---- the doctor's settings rows --------------------------------------------------------------


def _one(rows: list[Check], name: str) -> Check:
    found = [r for r in rows if r.name == name]
    assert len(found) == 1, f"{name}: {[r.name for r in rows]}"
    return found[0]


def _configured(row: networks.Network, **more: str) -> Settings:
    receiver = EVM_RECEIVER if row.is_evm else SOLANA_OWNER
    values = {var(row, "PAYMENT_ADDRESS"): receiver, var(row, "RPC_URL"): TWO_URLS, **more}
    return Settings(_env_file=None, **{k.lower(): v for k, v in values.items()})


@by_name(ADDED)
def test_doctor_rows_of_a_configured_network(row: networks.Network) -> None:
    rows = config.settings_checks(_configured(row))
    receiving = _one(rows, var(row, "PAYMENT_ADDRESS"))
    if row.testnet:  # judged as production: testnet USDC is free, it must not sell access
        assert receiving.status == "fail" and "testnet" in receiving.fix, receiving
    else:
        assert receiving.status == "ok"
    assert _one(rows, var(row, "RPC_URL")).status == "ok"
    assert not [r for r in rows if r.name == var(row, "*")]
    if row.is_evm:  # the row's canonical USDC on the row's chain id
        usdc = _one(rows, var(row, "USDC_ADDRESS"))
        assert (usdc.status, usdc.value) == ("ok", row.usdc)
        assert not [r for r in rows if r.name == var(row, "CHAIN_ID")]
    else:
        assert not [r for r in rows if r.name == var(row, "USDC_MINT")]
    failed = [r for r in rows if r.name.startswith(f"X402_{row.env}_") and r.status == "fail"]
    assert failed == ([receiving] if row.testnet else [])


@by_name([r for r in ADDED if r.is_evm])
def test_doctor_fails_a_look_alike_usdc_on_the_row_s_chain(row: networks.Network) -> None:
    look_alike = "0x" + "11" * 20
    rows = config.settings_checks(_configured(row, **{var(row, "USDC_ADDRESS"): look_alike}))
    usdc = _one(rows, var(row, "USDC_ADDRESS"))
    assert usdc.status == "fail" and row.usdc in usdc.fix, usdc


@by_name([r for r in ADDED if r.is_solana])
def test_doctor_warns_of_another_mint_on_the_row(row: networks.Network) -> None:
    rows = config.settings_checks(_configured(row, **{var(row, "USDC_MINT"): SOLANA_OWNER}))
    mint = _one(rows, var(row, "USDC_MINT"))
    assert mint.status == "warn" and row.usdc in mint.fix, mint


@by_name(ADDED)
def test_an_unconfigured_network_is_one_row(row: networks.Network) -> None:
    rows = config.settings_checks(Settings(_env_file=None))
    off = _one(rows, var(row, "*"))
    assert off.value == f"{row.name} off (no receiving address, no RPC URL)"
    assert var(row, "PAYMENT_ADDRESS") in off.fix and var(row, "RPC_URL") in off.fix
    assert [r.name for r in rows if r.name.startswith(f"X402_{row.env}_")] == [var(row, "*")]


def test_the_global_eip712_name_is_for_local_chains_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # Set for a stand-in token, it must not rename a live network's domain (Base Sepolia's
    # token signs "USDC"; "USD Coin" there would make every authorization fail).
    monkeypatch.setenv("X402_USDC_EIP712_NAME", "Local Coin")
    monkeypatch.setenv("X402_BASE_CHAIN_ID", "31337")
    settings = load_settings()
    for row in networks.of_family("evm"):
        if row.name != "base":
            assert settings.evm_chain(row.name).eip712_domain == (
                row.eip712_name,
                row.eip712_version,
            )
    assert settings.evm_chain("base").eip712_domain == ("Local Coin", "2")


@pytest.mark.parametrize(
    "row", [r for r in networks.NETWORKS.values() if r.testnet], ids=lambda r: r.name
)
def test_production_refuses_a_testnet_that_takes_payments(
    row: networks.Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Testnet USDC is free from a faucet: a production watcher taking it would give away
    # access. Development accepts it (that is what testnets are for).
    address = EVM_RECEIVER if row.is_evm else str(Keypair().pubkey())
    monkeypatch.setenv(var(row, "PAYMENT_ADDRESS"), address)
    assert load_settings().chain(row.name).network.testnet
    monkeypatch.setenv("WATCHER_ENV", "production")
    monkeypatch.setenv("X402_ADMIN_KEY", "k" + str(Keypair().pubkey()) * 2)
    with pytest.raises(errors.ConfigError) as err:
        load_settings()
    assert any(
        p.startswith(var(row, "PAYMENT_ADDRESS") + ":") and "testnet" in p
        for p in err.value.problems
    ), err.value.problems
    rows = {c.name: c for c in config.settings_checks(load_settings(watcher_env="development"))}
    assert rows[var(row, "PAYMENT_ADDRESS")].status == "fail"
