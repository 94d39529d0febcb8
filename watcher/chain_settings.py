"""Per-network settings: the variables each registry row reads, and the views built from them.

Every row of :mod:`watcher.networks` reads the same suffixes under its own
prefix, ``X402_<ENV>_``: ``PAYMENT_ADDRESS``, ``RPC_URL``, ``WS_URL`` (comma-
separated lists are the fallback order) and, as overrides of the row for a local
chain or a test, ``CHAIN_ID``, ``USDC_ADDRESS``, ``CONFIRMATIONS``,
``START_BLOCK``, ``USDC_EIP712_NAME``/``_VERSION`` on EVM; ``USDC_MINT``,
``COMMITMENT``, ``TOKEN_ACCOUNTS``, ``NETWORK`` (the CAIP-2 id x402 clients
name), ``GENESIS_HASH`` and ``FEE_PAYER_PRIVATE_KEY`` on Solana. The names of
Base's, Ethereum's and Solana's variables are the ones deployments already use.

:class:`EvmChain` and :class:`SolanaChain` are what the followers, doctor,
explain and the API read: lists split, EVM addresses lowercase, the row's
defaults filled in.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from watcher import keys, networks

Commitment = Literal["finalized", "confirmed"]
_CAIP2_SOLANA = re.compile(r"solana:[1-9A-HJ-NP-Za-km-z]{32}")


def prefix(row: networks.Network) -> str:
    """The field-name prefix of a row's variables: ``x402_base_sepolia_``."""
    return f"x402_{row.env.lower()}_"


def fields() -> dict[str, Any]:
    """The settings fields of every registry row, named ``x402_<env>_<suffix>``."""
    out: dict[str, Any] = {}  # name -> (type, FieldInfo), as pydantic.create_model takes
    for row in networks.NETWORKS.values():
        p = prefix(row)
        for suffix in ("payment_address", "rpc_url", "ws_url"):
            out[p + suffix] = (str | None, Field(default=None))
        if row.is_evm:
            out[p + "usdc_address"] = (str, Field(default=row.usdc))
            out[p + "chain_id"] = (int, Field(default=row.chain_id, ge=1))
            out[p + "confirmations"] = (int, Field(default=row.confirmations, ge=1, le=1000))
            out[p + "start_block"] = (int | None, Field(default=None, ge=0))
            out[p + "usdc_eip712_name"] = (str | None, Field(default=None))
            out[p + "usdc_eip712_version"] = (str | None, Field(default=None))
            # The sanctions oracle's address (issue 16): the row's, or another (a mock on
            # a local chain); X402_SANCTIONS_ORACLE turns the rule on.
            out[p + "sanctions_oracle_address"] = (str | None, Field(default=None))
        else:
            out[p + "usdc_mint"] = (str, Field(default=row.usdc))
            out[p + "commitment"] = (Commitment, Field(default=row.commitment))
            out[p + "token_accounts"] = (str | None, Field(default=None))  # besides the ATA
            out[p + "network"] = (str, Field(default=row.caip2))
            out[p + "genesis_hash"] = (str, Field(default=row.genesis_hash))
            out[p + "fee_payer_private_key"] = (SecretStr | None, Field(default=None))
    return out


def split(value: str | None) -> tuple[str, ...]:
    """A comma-separated variable as a tuple, blanks dropped."""
    if not value:
        return ()
    return tuple(p.strip() for p in value.split(",") if p.strip())


class _View(BaseModel):
    """What every network's view has: its registry name and its endpoints."""

    model_config = ConfigDict(frozen=True)

    name: str
    rpc_urls: tuple[str, ...]
    ws_urls: tuple[str, ...]

    @property
    def network(self) -> networks.Network:
        return networks.get(self.name)


class EvmChain(_View):
    """One EVM network as the follower sees it; addresses lowercase."""

    chain_id: int
    usdc: str
    receivers: tuple[str, ...]
    confirmations: int
    start_block: int | None
    # The token's EIP-712 domain, when overridden; None: the registry row's.
    eip712_name: str | None = None
    eip712_version: str | None = None
    # The sanctions oracle's contract (lowercase): the override, else the row's; None: none.
    sanctions_oracle: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.rpc_urls and self.receivers)

    @property
    def caip2(self) -> str:
        return f"eip155:{self.chain_id}"

    @property
    def eip712_domain(self) -> tuple[str, str]:
        """(name, version) an EIP-3009 authorization for this USDC is signed over."""
        row = self.network
        return (
            self.eip712_name or row.eip712_name or "USD Coin",
            self.eip712_version or row.eip712_version or "2",
        )


class SolanaChain(_View):
    """A Solana follower's view: the receiving owner (a wallet) and the USDC mint."""

    usdc_mint: str
    owner: str | None
    commitment: Commitment
    # Token accounts the operator lists besides the owner's associated one
    token_accounts: tuple[str, ...] = ()
    # Overrides of the row (a local test node); None: the registry row's.
    network_id: str | None = None  # CAIP-2, as x402 clients name the network
    genesis: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.rpc_urls and self.owner)

    @property
    def caip2(self) -> str:
        return self.network_id or self.network.caip2

    @property
    def genesis_hash(self) -> str:
        return self.genesis or self.network.genesis_hash or ""


Value = Callable[[str], str | None]  # a variable's value with placeholders read as unset


def evm_view(row: networks.Network, value: Value, raw: Callable[[str], Any]) -> EvmChain:
    """The follower's view of an EVM row under the current settings."""
    p = prefix(row)
    return EvmChain(
        name=row.name,
        chain_id=raw(p + "chain_id"),
        rpc_urls=split(value(p + "rpc_url")),
        ws_urls=split(value(p + "ws_url")),
        usdc=str(raw(p + "usdc_address")).lower(),
        receivers=tuple(a.lower() for a in split(value(p + "payment_address"))),
        confirmations=raw(p + "confirmations"),
        start_block=raw(p + "start_block"),
        eip712_name=value(p + "usdc_eip712_name"),
        eip712_version=value(p + "usdc_eip712_version"),
        sanctions_oracle=_lower(value(p + "sanctions_oracle_address") or row.sanctions_oracle),
    )


def _lower(address: str | None) -> str | None:
    return None if address is None else address.lower()


def solana_view(row: networks.Network, value: Value, raw: Callable[[str], Any]) -> SolanaChain:
    """The follower's view of a Solana row under the current settings."""
    p = prefix(row)
    return SolanaChain(
        name=row.name,
        rpc_urls=split(value(p + "rpc_url")),
        ws_urls=split(value(p + "ws_url")),
        usdc_mint=raw(p + "usdc_mint"),
        owner=value(p + "payment_address"),
        commitment=raw(p + "commitment"),
        token_accounts=tuple(dict.fromkeys(split(value(p + "token_accounts")))),
        network_id=raw(p + "network"),
        genesis=raw(p + "genesis_hash"),
    )


def problems(value: Value, raw: Callable[[str], Any]) -> list[str]:
    """Every per-network reason not to start, as ``VARIABLE: what; how to fix``."""
    out: list[str] = []
    for row in networks.NETWORKS.values():
        out += _evm_problems(row, value, raw) if row.is_evm else _solana_problems(row, value, raw)
        p = prefix(row)
        out += url_problems(p + "rpc_url", value, ("http", "https"))
        out += url_problems(p + "ws_url", value, ("ws", "wss"))
    return out


def testnet_problems(value: Value) -> list[str]:
    """In production, a testnet that takes payments would sell access for faucet money:
    testnet USDC is free. Refused, naming the variable that turns it on."""
    out = []
    for row in networks.NETWORKS.values():
        var = prefix(row) + "payment_address"
        if row.testnet and value(var) is not None:
            out.append(
                f"{var.upper()}: {row.title} is a testnet, whose USDC anyone gets free from a "
                "faucet: it would sell access for nothing; unset it in production (test with "
                "WATCHER_ENV=development)"
            )
    return out


def url_problems(name: str, value: Value, schemes: tuple[str, ...]) -> list[str]:
    """Each entry of a comma-separated URL variable that is not a full URL of ``schemes``."""
    out = []
    for url in split(value(name)):
        try:
            parts = urlsplit(url)
            ok = "://" in url and parts.scheme in schemes and bool(parts.hostname)
            _ = parts.port  # a port that is not a number raises here
        except ValueError:
            ok = False
        if not ok:
            # As typed (the path, where providers put API keys, elided): re-parsing
            # "localhost:8545" would show it as "localhost://?".
            shown = keys.redact_typed(url)
            hint = f"add {schemes[0]}:// or {schemes[1]}:// in front; " if "://" not in url else ""
            out.append(
                f"{name.upper()}: {shown!r} is not a {'/'.join(schemes)} URL; {hint}"
                f"give a comma-separated list of full URLs ({schemes[1]}://host:port/...), "
                "primary first"
            )
    return out


def _evm_problems(row: networks.Network, value: Value, raw: Callable[[str], Any]) -> list[str]:
    p = prefix(row)
    out = []
    for addr in split(value(p + "payment_address")):
        if why := keys.evm_address_problem(addr):
            out.append(f"{(p + 'payment_address').upper()}: {addr!r} {why}")
    usdc = str(raw(p + "usdc_address"))
    if why := keys.evm_address_problem(usdc):
        out.append(f"{(p + 'usdc_address').upper()}: {usdc!r} {why}")
    oracle = value(p + "sanctions_oracle_address")
    if oracle is not None and (why := keys.evm_address_problem(oracle)):
        out.append(f"{(p + 'sanctions_oracle_address').upper()}: {oracle!r} {why}")
    return out


def _solana_problems(row: networks.Network, value: Value, raw: Callable[[str], Any]) -> list[str]:
    p = prefix(row)
    var = p.upper()
    out = []
    owner = value(p + "payment_address")
    if owner is not None and not keys.is_solana_pubkey(owner):
        out.append(
            f"{var}PAYMENT_ADDRESS: {owner!r} is not a Solana public key "
            "(32 bytes of base58); copy the wallet address, not a token account or signature"
        )
    if not keys.is_solana_pubkey(str(raw(p + "usdc_mint"))):
        out.append(f"{var}USDC_MINT: not 32 bytes of base58")
    for acct in split(value(p + "token_accounts")):
        if not keys.is_solana_pubkey(acct):
            out.append(
                f"{var}TOKEN_ACCOUNTS: {acct!r} is not a Solana public key; list "
                "token account addresses (base58), comma-separated"
            )
        elif acct == owner:
            out.append(
                f"{var}TOKEN_ACCOUNTS: lists the wallet itself; list its USDC token "
                "accounts (the associated one is always followed)"
            )
    secret = value(p + "fee_payer_private_key")
    if secret is not None:
        try:
            keys.parse_solana_keypair(secret)
        except ValueError as exc:
            out.append(
                f"{var}FEE_PAYER_PRIVATE_KEY: {exc}; give the keypair as base58 "
                "(64 bytes, as wallets export it) or as the JSON array of solana-keygen"
            )
    network = str(raw(p + "network"))
    if not _CAIP2_SOLANA.fullmatch(network):
        out.append(
            f"{var}NETWORK: {network!r} is not a CAIP-2 Solana network; {row.title} is {row.caip2}"
        )
    if not keys.is_solana_pubkey(str(raw(p + "genesis_hash"))):
        out.append(f"{var}GENESIS_HASH: not base58; {row.title}'s is {row.genesis_hash}")
    return out
