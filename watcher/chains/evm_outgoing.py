"""Our own refund transfers, as the EVM follower sees them (issue 16, watcher/refunds/).

The follower watches transfers *to* us; to confirm a refund it must also see USDC
leaving a refund wallet. When a wallet is configured, each step asks for the Transfer
logs whose ``from`` topic is a refund wallet in the same batch as its own logs (same
endpoint, same blocks, same checks); the step's transaction hands them to
``refunds.outgoing.observe``. With no wallet configured nothing is asked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from watcher import errors
from watcher.chains import evm_scan
from watcher.chains.evm_logs import TRANSFER_TOPIC, BloomFilter, Header, parse_transfer, topic_for
from watcher.refunds import outgoing


class Watch:
    """The refund wallets one follower watches on its chain."""

    def __init__(self, usdc: str, wallets: Iterable[str]) -> None:
        self.usdc = usdc
        self.wallets = frozenset(w.lower() for w in wallets)
        self.topics = sorted(topic_for(w) for w in self.wallets)
        self.bloom = BloomFilter(usdc, self.wallets)  # the wallet's topic, in any position

    def __bool__(self) -> bool:
        return bool(self.wallets)

    def logs_call(self, where: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """eth_getLogs for USDC Transfers from a refund wallet over ``where``."""
        flt = {**where, "address": self.usdc, "topics": [TRANSFER_TOPIC, self.topics, None]}
        return "eth_getLogs", [flt]

    def may_match(self, header: Header, use_bloom: bool) -> bool:
        return not header.empty and (not use_bloom or self.bloom.may_match(header.bloom))

    def transfers(
        self,
        chain: str,
        logs: Sequence[Mapping[str, Any]],
        frm: int,
        to: int,
        hashes: Mapping[int, str],
    ) -> list[outgoing.Outgoing]:
        """The refund transfers among ``logs`` (checked like the follower's own: in range,
        from the block hash it verified, our USDC, from a wallet of ours)."""
        out: list[outgoing.Outgoing] = []
        for lg in logs:
            raw = parse_transfer(lg)
            if raw is None:
                continue
            n, block_hash = raw.block_number, raw.block_hash
            if n is None or block_hash is None or not frm <= n <= to:
                raise errors.RpcResponseError(
                    f"{chain}: eth_getLogs answered a log outside {frm}-{to}"
                )
            expected = hashes.get(n)
            if expected is not None and expected != block_hash:
                raise errors.RpcResponseError(f"{chain}: log of block {n} from another branch")
            if raw.token != self.usdc or raw.from_address not in self.wallets or raw.amount <= 0:
                continue
            out.append(
                outgoing.Outgoing(
                    tx_hash=raw.tx_hash,
                    log_index=raw.log_index,
                    block_number=n,
                    block_hash=block_hash,
                    from_address=raw.from_address,
                    to_address=raw.to_address,
                    amount=raw.amount,
                    token=raw.token,
                )
            )
        return out

    def calls(self, wheres: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Any]]]:
        """The extra eth_getLogs calls of one step (none while no wallet is configured)."""
        return [self.logs_call(w) for w in wheres] if self.wallets else []

    def found(
        self, chain: str, answers: Sequence[Any], frm: int, to: int, hashes: Mapping[int, str]
    ) -> list[outgoing.Outgoing] | None:
        """The refund transfers of the extra calls' answers; None while nothing is watched
        (the step then makes no refund write at all)."""
        if not self.wallets:
            return None
        logs = [lg for a in answers for lg in evm_scan.log_list(a, chain)]
        return self.transfers(chain, logs, frm, to, hashes)
