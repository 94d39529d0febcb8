"""Everything the API talks to outside PostgreSQL, built once per app and closed with it.

:class:`Clients` is made by ``api.app.create_app`` and kept on
``app.state.clients``; the paywall and the claims hand it to the code that
needs it. It holds, per network, the settlement RPC pool (EVM and Solana), the
EIP-1271 RPC pool of contract-wallet claims, our relayer and its lock, the
facilitator's HTTP client, and the sanctions oracle payers are screened with. A
pool is opened on first use and kept: its connections, the chain-id check of each
endpoint and every breaker's memory outlive the request that opened it. The app's
lifespan calls :meth:`aclose`; a pool asked for after that is opened afresh.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable

import certifi
import httpx

from api import chains
from api.x402 import facilitator, relayer
from watcher import networks, rpc
from watcher.screening import oracle as sanctions
from watcher.screening import settings_screen
from watcher.settings import Settings

SETTLE_RPC_TIMEOUT_SECONDS = 10.0
EIP1271_TIMEOUT_SECONDS = 5.0
Transport = Callable[[], httpx.AsyncBaseTransport]


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every client: building one costs tens of ms, and a payer waits."""
    return ssl.create_default_context(cafile=certifi.where())


def http_transport() -> httpx.AsyncHTTPTransport:
    """A fresh connection pool that reuses :func:`tls_context` (its owner closes it)."""
    return httpx.AsyncHTTPTransport(verify=tls_context())


class Clients:
    """The app's RPC pools, relayers and facilitator client (one of each per network)."""

    def __init__(self, settings: Settings, *, transport: Transport = http_transport) -> None:
        self.settings = settings
        self._transport = transport  # the test seam: every pool gets a fresh one
        self._settle: dict[str, rpc.RpcPool] = {}
        self._eip1271: dict[str, rpc.RpcPool] = {}
        self._relayers: dict[str, relayer.Relayer] = {}
        self._facilitator: facilitator.Facilitator | None = None
        self._oracle: sanctions.Oracle | None = None
        self._oracle_built = False
        # One per EVM network for the app's life, whichever Relayer object sends: one
        # request of this process at a time waits on the database's nonce row lock
        # (api.x402.nonces), the others wait here without holding a pooled connection.
        self._locks: dict[str, asyncio.Lock] = {
            c.name: asyncio.Lock()
            for c in chains.all_chains(settings)
            if networks.family(c.name) == "evm"
        }

    def settlement_pool(self, chain: str) -> rpc.RpcPool:
        """The pool x402 settlements on ``chain`` use (EVM: chain id checked)."""
        pool = self._settle.get(chain)
        if pool is None:
            pool = self._settle[chain] = self._settlement_pool(chain)
        return pool

    def _settlement_pool(self, chain: str) -> rpc.RpcPool:
        if networks.family(chain) == "solana":
            sol = self.settings.solana_chain(chain)
            return rpc.RpcPool(
                chain,
                sol.rpc_urls,
                kind="solana",
                genesis_hash=sol.genesis_hash,
                commitment="confirmed",
                timeout=SETTLE_RPC_TIMEOUT_SECONDS,
                transport=self._transport(),
            )
        evm = self.settings.evm_chain(chain)
        return rpc.RpcPool(
            chain,
            evm.rpc_urls,
            chain_id=evm.chain_id,
            timeout=SETTLE_RPC_TIMEOUT_SECONDS,
            transport=self._transport(),
        )

    def eip1271_pool(self, chain: str) -> rpc.RpcPool | None:
        """The pool asking contract wallets about claims on an EVM ``chain`` (None without
        an RPC URL: such a claim cannot be checked)."""
        pool = self._eip1271.get(chain)
        if pool is None:
            evm = self.settings.evm_chain(chain)
            if not evm.rpc_urls:
                return None
            pool = self._eip1271[chain] = rpc.RpcPool(
                chain,
                evm.rpc_urls,
                chain_id=evm.chain_id,
                timeout=EIP1271_TIMEOUT_SECONDS,
                transport=self._transport(),
            )
        return pool

    def relayer_for(self, chain: str) -> relayer.Relayer | None:
        """Our relayer on an EVM ``chain``, or None when no relayer key is configured."""
        found = self._relayers.get(chain)
        if found is None:
            key = self.settings.relayer_key()
            if key is None:
                return None
            found = self._relayers[chain] = relayer.Relayer(
                key,
                self.settlement_pool(chain),
                self.settings.evm_chain(chain).chain_id,
                receipt_timeout=self.settings.x402_settle_timeout_seconds,
                lock=self._locks.setdefault(chain, asyncio.Lock()),
            )
        return found

    def oracle(self) -> sanctions.Oracle | None:
        """The sanctions oracle x402 payers are screened with (it asks through the
        settlement pools; its answers cached for the app's life); None when it is off."""
        if not self._oracle_built:
            self._oracle_built = True
            self._oracle = settings_screen.oracle_from_settings(self.settings, self.settlement_pool)
        return self._oracle

    def facilitator_client(self) -> facilitator.Facilitator:
        """The facilitator's client (``X402_FACILITATOR_URL``)."""
        if self._facilitator is None:
            self._facilitator = facilitator.Facilitator(
                self.settings.x402_facilitator_url or "", transport=self._transport()
            )
        return self._facilitator

    async def aclose(self) -> None:
        """Close every pool and client opened so far (shielded: shutdown must finish)."""
        opened: list[rpc.RpcPool | facilitator.Facilitator] = [
            *self._settle.values(),
            *self._eip1271.values(),
        ]
        if self._facilitator is not None:
            opened.append(self._facilitator)
        self._settle, self._eip1271, self._relayers = {}, {}, {}
        self._facilitator = None
        self._oracle, self._oracle_built = None, False  # it asked through those pools
        for client in opened:
            await asyncio.shield(client.aclose())
