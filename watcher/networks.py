"""The registry of networks: one row per network we can watch and take payments on.

Everything else derives from these rows: the environment variables each network
reads (``X402_<ENV>_*``), the followers the daemon starts, the doctor's rows,
``watcher explain``, the x402 offers, the CLI ``--chain`` choices and the
``networks`` reference table the schema checks ``chain`` columns against.

Adding a network is adding a row here (and its tests). A row's ``family``
decides which follower, which settlement and which address rules apply: no code
compares a network's *name* to pick a family.

Each row cites where its facts come from. USDC addresses, chain ids and
EIP-712 domains were read from Circle's USDC contract address page and the
x402 package's network table (``x402/mechanisms/evm/constants.py`` and
``x402/mechanisms/svm/constants.py``); where the two disagree on the EIP-712
domain, the token's own ``name()``/``version()`` win, since that is what a
signature is checked against on chain. Default confirmations: docs/evm.md says
why each number.

Per-network overrides (``X402_<ENV>_CHAIN_ID``, ``_USDC_ADDRESS`` /
``_USDC_MINT``, ``X402_SOLANA_NETWORK`` and friends) stay: they change a row
for a local chain or a test, never the registry itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

Family = Literal["evm", "solana"]

USDC_DECIMALS = 6

CIRCLE = "https://developers.circle.com/stablecoins/usdc-contract-addresses"
X402_EVM = "x402 package, x402/mechanisms/evm/constants.py (NETWORK_CONFIGS)"
X402_SVM = "x402 package, x402/mechanisms/svm/constants.py"


@dataclass(frozen=True, slots=True)
class Network:
    """One network's public facts. EVM rows carry ``chain_id`` and an EIP-712 domain;
    Solana rows carry ``genesis_hash`` and a commitment instead of a confirmation count."""

    name: str  # API, CLI and database name: lowercase, may contain '-'
    family: Family
    caip2: str  # what x402 v2 and wallets call it
    x402_v1: str | None  # the x402 v1 network name, when v1 has one
    usdc: str  # EIP-55 contract address, or the base58 mint
    testnet: bool
    block_seconds: float  # typical time between blocks (slots on Solana); alert thresholds
    source: str  # where the facts above were read
    title: str = ""  # how an operator calls it
    decimals: int = USDC_DECIMALS
    chain_id: int | None = None  # EVM
    eip712_name: str | None = None  # EVM: the USDC contract's EIP-712 domain
    eip712_version: str | None = None
    confirmations: int | None = None  # EVM: blocks on top before a payment is credited
    genesis_hash: str | None = None  # Solana
    commitment: Literal["finalized", "confirmed"] | None = None  # Solana
    # EVM: Chainalysis's sanctions oracle (``isSanctioned(address)``), where deployed.
    sanctions_oracle: str | None = None

    @property
    def env(self) -> str:
        """The variable prefix's network part: ``base-sepolia`` reads ``X402_BASE_SEPOLIA_*``."""
        return self.name.replace("-", "_").upper()

    @property
    def is_evm(self) -> bool:
        return self.family == "evm"

    @property
    def is_solana(self) -> bool:
        return self.family == "solana"


def _evm(
    name: str,
    title: str,
    chain_id: int,
    usdc: str,
    *,
    v1: str | None,
    eip712: tuple[str, str],
    confirmations: int,
    block_seconds: float,
    testnet: bool = False,
    source: str = f"{CIRCLE}; {X402_EVM}",
    oracle: str | None = None,
) -> Network:
    return Network(
        name=name,
        title=title,
        family="evm",
        caip2=f"eip155:{chain_id}",
        x402_v1=v1,
        usdc=usdc,
        testnet=testnet,
        block_seconds=block_seconds,
        source=source,
        chain_id=chain_id,
        eip712_name=eip712[0],
        eip712_version=eip712[1],
        confirmations=confirmations,
        sanctions_oracle=oracle,
    )


def _solana(name: str, title: str, genesis: str, usdc: str, *, v1: str, testnet: bool) -> Network:
    return Network(
        name=name,
        title=title,
        family="solana",
        caip2=f"solana:{genesis[:32]}",  # CAIP-2 for Solana: the genesis hash's first 32 chars
        x402_v1=v1,
        usdc=usdc,
        testnet=testnet,
        block_seconds=0.4,
        source=f"{CIRCLE}; {X402_SVM}; genesis hash: getGenesisHash of the cluster",
        genesis_hash=genesis,
        commitment="finalized",
    )


# Chainalysis's sanctions oracle, from its documentation page "Chainalysis oracle for
# sanctions screening" (https://go.chainalysis.com/chainalysis-oracle-docs.html): one
# address on Ethereum, Polygon, BNB Chain, Avalanche, Optimism, Arbitrum, Fantom, Celo
# (and Blast), and its own deployment on Base. The page itself was read through the copies
# and citations of it that integrations publish (the search corpus holds no snapshot of
# the page); the Base address agrees across independent integrations. No testnet is
# listed: on a testnet or a local chain, X402_<NETWORK>_SANCTIONS_ORACLE_ADDRESS sets one.
CHAINALYSIS_ORACLE = "0x40C57923924B5c5c5455c48D93317139ADDaC8fb"
CHAINALYSIS_ORACLE_BASE = "0x3A91A31cB3dC49b4db9Ce721F50a9D076c8D739B"

USD_COIN = ("USD Coin", "2")  # name()/version() of Circle's FiatTokenV2 on mainnets
USDC_TESTNET = ("USDC", "2")  # Circle's testnet deployments answer name() = "USDC"

# Base's Denim upgrade (5 Nov 2026) cut its blocks to 0.2 s. The rows keep 2 s: block
# timestamps still have whole-second resolution (five blocks share one), and the alert
# "no new block for 3 block times" derived from this figure would then be sub-second and
# flap. Revisit with the millisecond timestamps Denim adds; docs/evm.md says what it
# means for the default confirmations.
_ROWS = (
    _evm(
        "base", "Base", 8453, "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
        v1="base", eip712=USD_COIN, confirmations=6, block_seconds=2,
        oracle=CHAINALYSIS_ORACLE_BASE,
    ),
    _evm(
        "ethereum", "Ethereum", 1, "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
        v1="ethereum", eip712=USD_COIN, confirmations=12, block_seconds=12,
        oracle=CHAINALYSIS_ORACLE,
    ),
    _solana(
        "solana", "Solana", "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d",
        "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", v1="solana", testnet=False,
    ),
    _evm(
        "arbitrum", "Arbitrum One", 42161, "0xaf88d065e77c8cC2239327C5EDb3A432268e5831",
        v1=None, eip712=USD_COIN, confirmations=48, block_seconds=0.25,
        oracle=CHAINALYSIS_ORACLE,
    ),
    _evm(
        "optimism", "OP Mainnet", 10, "0x0b2C639c533813f4Aa9D7837CAf62653d097Ff85",
        v1=None, eip712=USD_COIN, confirmations=6, block_seconds=2,
        oracle=CHAINALYSIS_ORACLE,
    ),
    _evm(
        "polygon", "Polygon PoS", 137, "0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359",
        v1="polygon", eip712=USD_COIN, confirmations=32, block_seconds=2,
        oracle=CHAINALYSIS_ORACLE,
    ),
    _evm(
        "avalanche", "Avalanche C-Chain", 43114, "0xB97EF9Ef8734C71904D8002F8b6Bc66Dd9c48a6E",
        v1="avalanche", eip712=USD_COIN, confirmations=1, block_seconds=2,
        oracle=CHAINALYSIS_ORACLE,
    ),
    _evm(
        "base-sepolia", "Base Sepolia", 84532, "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        v1="base-sepolia", eip712=USDC_TESTNET, confirmations=6, block_seconds=2, testnet=True,
    ),
    _evm(
        "sepolia", "Ethereum Sepolia", 11155111, "0x1c7D4B196Cb0C7B01d743Fbc6116a902379C7238",
        v1=None, eip712=USDC_TESTNET, confirmations=12, block_seconds=12, testnet=True,
    ),
    _solana(
        "solana-devnet", "Solana devnet", "EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG",
        "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU", v1="solana-devnet", testnet=True,
    ),
)  # fmt: skip

NETWORKS: dict[str, Network] = {row.name: row for row in _ROWS}
NAMES: tuple[str, ...] = tuple(NETWORKS)


def get(name: str) -> Network:
    """The row named ``name``; KeyError (with the known names) for any other."""
    try:
        return NETWORKS[name]
    except KeyError:
        raise KeyError(f"unknown network {name!r}; known: {', '.join(NAMES)}") from None


def family(name: str) -> Family:
    """The family of a network by name (for rows read back from the database)."""
    return get(name).family


def of_family(fam: Family) -> Iterator[Network]:
    """The rows of one family, in registry order."""
    return (row for row in _ROWS if row.family == fam)


def by_caip2(caip2: str) -> Network | None:
    """The row whose CAIP-2 id is ``caip2`` (as an x402 client names a network)."""
    return next((row for row in _ROWS if row.caip2 == caip2), None)
