"""What the API knows about each chain, from settings alone (no RPC): where to pay, what counts.

Also the one place that validates and normalises what payers type: EVM hashes
in any letter case become lowercase (the ledger stores them so); Solana
signatures are base58 and case-sensitive, so they are validated, not changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from api.errors import ApiError
from watcher import chain_settings, keys, networks
from watcher.settings import Settings

# The chain names a request may carry: the registry's (an enum in the OpenAPI schema).
if TYPE_CHECKING:
    ChainParam = str
else:
    ChainParam = Literal[networks.NAMES]

_EVM_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")
_SOLANA_SIGNATURE = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{64,88}$")


@dataclass(frozen=True, slots=True)
class ChainInfo:
    name: str
    enabled: bool  # a receiving address is configured: the API accepts payments here
    pay_to: str | None  # EVM: lowercase address; Solana: owner (base58)
    asset: str  # USDC contract (lowercase) or mint
    confirmations: int | None  # None on Solana: `finalized` commitment instead
    commitment: str | None
    chain_id: int | None
    caip2: str  # what x402 v2 names the network (with the operator's overrides)

    @property
    def network(self) -> networks.Network:
        return networks.get(self.name)

    @property
    def family(self) -> networks.Family:
        return self.network.family

    @property
    def pay_to_display(self) -> str | None:
        """EVM addresses shown checksummed, as wallets expect."""
        if self.pay_to is None or self.family != "evm":
            return self.pay_to
        return keys.checksummed(self.pay_to)

    @property
    def asset_display(self) -> str:
        return self.asset if self.family != "evm" else keys.checksummed(self.asset)


def chain_info(settings: Settings, name: str) -> ChainInfo:
    """The chain's public payment details."""
    chain = settings.chain(name)
    if isinstance(chain, chain_settings.SolanaChain):
        return ChainInfo(
            name=name,
            enabled=chain.owner is not None,
            pay_to=chain.owner,
            asset=chain.usdc_mint,
            confirmations=None,
            commitment=chain.commitment,
            chain_id=None,
            caip2=chain.caip2,
        )
    return ChainInfo(
        name=name,
        enabled=bool(chain.receivers),
        pay_to=chain.receivers[0] if chain.receivers else None,
        asset=chain.usdc,
        confirmations=chain.confirmations,
        commitment=None,
        chain_id=chain.chain_id,
        caip2=chain.caip2,
    )


def all_chains(settings: Settings) -> list[ChainInfo]:
    """Every registry network's details, in registry order."""
    return [chain_info(settings, name) for name in networks.NAMES]


def enabled_chain(settings: Settings, name: str) -> ChainInfo:
    """The chain if it accepts payments here, else a 400 saying which chains do."""
    info = chain_info(settings, name)
    if not info.enabled:
        accepted = [c.name for c in all_chains(settings) if c.enabled]
        raise ApiError(
            400,
            "chain_not_accepted",
            f"this server does not accept payments on {name}",
            f"pay on one of: {', '.join(accepted)}"
            if accepted
            else "this server takes payments on no network yet (none is configured: its "
            "operator sets X402_<NETWORK>_PAYMENT_ADDRESS)",
            accepted_chains=accepted,
        )
    return info


def normalise_tx_hash(chain: str, tx_hash: str) -> str:
    """The ledger's spelling of a hash, or a 400 explaining the expected format."""
    value = tx_hash.strip()
    if networks.family(chain) == "solana":
        if not _SOLANA_SIGNATURE.match(value):
            raise ApiError(
                400,
                "malformed_tx_hash",
                "a Solana transaction signature is 64 to 88 base58 characters",
                "copy the signature exactly (it is case-sensitive)",
            )
        return value
    if not _EVM_HASH.match(value):
        raise ApiError(
            400,
            "malformed_tx_hash",
            f"an {chain} transaction hash is 0x followed by 64 hex digits",
            "copy the hash from your wallet or a block explorer",
        )
    return value.lower()
