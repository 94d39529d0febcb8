"""What the API knows about each chain, from settings alone (no RPC): where to pay, what counts.

Also the one place that validates and normalises what payers type: EVM hashes
in any letter case become lowercase (the ledger stores them so); Solana
signatures are base58 and case-sensitive, so they are validated, not changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from api.errors import ApiError
from watcher import settings as settings_mod
from watcher.settings import ChainName, Settings

ChainParam = Literal["base", "ethereum", "solana"]

_EVM_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")
_SOLANA_SIGNATURE = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{64,88}$")

# x402 network identifiers for the accepts list.
X402_NETWORK = {"base": "base", "ethereum": "ethereum", "solana": "solana"}


@dataclass(frozen=True, slots=True)
class ChainInfo:
    name: ChainName
    enabled: bool  # a receiving address is configured: the API accepts payments here
    pay_to: str | None  # EVM: lowercase address; Solana: owner (base58)
    asset: str  # USDC contract (lowercase) or mint
    confirmations: int | None  # None on Solana: `finalized` commitment instead
    commitment: str | None
    chain_id: int | None

    @property
    def pay_to_display(self) -> str | None:
        """EVM addresses shown checksummed, as wallets expect."""
        if self.pay_to is None or self.name == "solana":
            return self.pay_to
        from eth_utils.address import to_checksum_address

        return str(to_checksum_address(self.pay_to))

    @property
    def asset_display(self) -> str:
        if self.name == "solana":
            return self.asset
        from eth_utils.address import to_checksum_address

        return str(to_checksum_address(self.asset))


def chain_info(settings: Settings, name: ChainName) -> ChainInfo:
    """The chain's public payment details."""
    if name == "solana":
        sol = settings.solana
        return ChainInfo(
            name="solana",
            enabled=sol.owner is not None,
            pay_to=sol.owner,
            asset=sol.usdc_mint,
            confirmations=None,
            commitment=sol.commitment,
            chain_id=None,
        )
    evm = settings.evm_chain(name)
    return ChainInfo(
        name=name,
        enabled=bool(evm.receivers),
        pay_to=evm.receivers[0] if evm.receivers else None,
        asset=evm.usdc,
        confirmations=evm.confirmations,
        commitment=None,
        chain_id=evm.chain_id,
    )


def all_chains(settings: Settings) -> list[ChainInfo]:
    return [chain_info(settings, c) for c in settings_mod.CHAINS]


def enabled_chain(settings: Settings, name: ChainName) -> ChainInfo:
    """The chain if it accepts payments here, else a 400 saying which chains do."""
    info = chain_info(settings, name)
    if not info.enabled:
        accepted = [c.name for c in all_chains(settings) if c.enabled]
        raise ApiError(
            400,
            "chain_not_accepted",
            f"this server does not accept payments on {name}",
            f"pay on one of: {', '.join(accepted) or 'none configured'}",
            accepted_chains=accepted,
        )
    return info


def normalise_tx_hash(chain: ChainName, tx_hash: str) -> str:
    """The ledger's spelling of a hash, or a 400 explaining the expected format."""
    value = tx_hash.strip()
    if chain == "solana":
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
