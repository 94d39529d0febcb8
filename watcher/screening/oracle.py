"""Chainalysis's sanctions oracle: ``isSanctioned(address)`` through ``eth_call``, cached.

The contract answers one ABI word, 1 (sanctioned) or 0, per address. :class:`Oracle`
asks it through the network's RPC pool with a bounded number of calls in flight,
keeps every answer in memory for ``ttl`` seconds, and never raises for the chain's
faults: an RPC failure, a revert, an answer that is not one word of 0 or 1 (no contract
at that address answers ``0x``) is None, "no answer", and is not cached, so the next
payment asks again. It holds no database connection: followers ask it before their
transaction (``watcher/screening/prefetch.py``), the x402 rail before settling.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog
from eth_utils.crypto import keccak

from watcher import errors, rpc

log = structlog.get_logger(__name__)

SELECTOR = keccak(text="isSanctioned(address)")[:4].hex()
DEFAULT_TTL_SECONDS = 86_400.0
CONCURRENCY = 8  # calls in flight per oracle: a backfill of thousands must not flood a node
DEADLINE_SECONDS = 10.0
_EVM = re.compile(r"0x[0-9a-f]{40}")

Answer = bool | None
PoolFor = Callable[[str], rpc.RpcPool]


@dataclass(frozen=True, slots=True)
class Target:
    """Where one network's oracle is: the contract, and the endpoints to reach it."""

    contract: str  # lowercase 0x address
    rpc_urls: tuple[str, ...]
    chain_id: int


def call_data(address: str) -> str:
    """The ``eth_call`` data of ``isSanctioned(address)``."""
    return "0x" + SELECTOR + address.lower().removeprefix("0x").rjust(64, "0")


def read_answer(result: object) -> Answer:
    """One ABI word of 0 or 1 as a bool; anything else is no answer."""
    word = rpc.abi_uint(result)
    return None if word is None or word > 1 else bool(word)


class Oracle:
    """The sanctions oracle of each network in ``targets``, answers cached for ``ttl``."""

    def __init__(
        self,
        targets: Mapping[str, Target],
        *,
        ttl: float = DEFAULT_TTL_SECONDS,
        pool_for: PoolFor | None = None,
        concurrency: int = CONCURRENCY,
        deadline: float = DEADLINE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.targets = dict(targets)
        self.ttl = ttl
        self._pool_for = pool_for  # someone else's pools (the API's); else our own
        self._own: dict[str, rpc.RpcPool] = {}
        self._cache: dict[tuple[str, str], tuple[float, bool]] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._deadline = deadline
        self._clock = clock

    @property
    def chains(self) -> frozenset[str]:
        """The networks this oracle can be asked about."""
        return frozenset(self.targets)

    async def lookup(self, chain: str, addresses: Sequence[str]) -> dict[str, Answer]:
        """``{address: sanctioned}`` for each of ``addresses`` (as given): True, False, or
        None when the oracle could not be asked or gave no usable answer. Never raises
        for an RPC fault; answers come from the cache while they are fresh."""
        out: dict[str, Answer] = {}
        missing: dict[str, list[str]] = {}  # lowercase -> the spellings asked
        now = self._clock()
        for address in addresses:
            key = address.lower()
            cached = self._cache.get((chain, key))
            if cached is not None and now - cached[0] < self.ttl:
                out[address] = cached[1]
            elif chain not in self.targets or not _EVM.fullmatch(key):
                out[address] = None
            else:
                missing.setdefault(key, []).append(address)
        if missing:
            keys = list(missing)
            answers = await asyncio.gather(*(self._ask(chain, k) for k in keys))
            for key, answer in zip(keys, answers, strict=True):
                if answer is not None:
                    self._cache[(chain, key)] = (self._clock(), answer)
                for spelled in missing[key]:
                    out[spelled] = answer
        return out

    async def _ask(self, chain: str, address: str) -> Answer:
        target = self.targets[chain]
        call = {"to": target.contract, "data": call_data(address)}
        async with self._slots:
            try:
                result = await self._pool(chain).request(
                    "eth_call", [call, "latest"], deadline=self._deadline
                )
            except (errors.RpcError, TimeoutError) as exc:  # a revert is an RpcResponseError
                log.warning("sanctions_oracle_no_answer", chain=chain, error=str(exc)[:200])
                return None
        answer = read_answer(result)
        if answer is None:
            log.warning("sanctions_oracle_malformed", chain=chain, answer=str(result)[:80])
        return answer

    def _pool(self, chain: str) -> rpc.RpcPool:
        if self._pool_for is not None:
            return self._pool_for(chain)
        pool = self._own.get(chain)
        if pool is None:
            target = self.targets[chain]
            pool = self._own[chain] = rpc.RpcPool(
                chain, target.rpc_urls, chain_id=target.chain_id, timeout=self._deadline
            )
        return pool

    def forget(self) -> None:
        """Drop every cached answer (the next lookups ask the chain)."""
        self._cache.clear()

    async def aclose(self) -> None:
        """Close the pools this oracle opened (not the ones it was lent)."""
        pools, self._own = list(self._own.values()), {}
        for pool in pools:
            await asyncio.shield(pool.aclose())
