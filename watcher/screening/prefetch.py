"""The seam the followers ask the sanctions oracle through, before their transaction.

The followers call :func:`answers` after fetching a step and before opening its
database transaction (never holding a connection across the oracle's RPC calls);
the answers are stored with the payments (``payments.oracle_answers``) and the
ledger judges them at credit. The screening part plugs the real oracle in at start
with :func:`install`; with none installed there is nothing to ask (None).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Asker(Protocol):
    """What the oracle offers (``watcher.screening.oracle.Oracle``)."""

    @property
    def chains(self) -> frozenset[str]:
        """The networks it answers for."""

    async def lookup(self, chain: str, addresses: Sequence[str]) -> dict[str, bool | None]:
        """address -> sanctioned (None: no answer); never raises for RPC faults."""


_oracle: Asker | None = None


def install(oracle: Asker | None) -> None:
    """Make ``oracle`` the one the followers ask (None: no oracle)."""
    global _oracle
    _oracle = oracle


async def answers(chain: str, addresses: Sequence[str]) -> dict[str, bool | None] | None:
    """The oracle's answers for ``addresses`` on ``chain``; None when no oracle is
    installed or it does not cover ``chain`` (the ledger then treats the chain as not
    asked)."""
    if _oracle is None or chain not in _oracle.chains:
        return None
    unique = list(dict.fromkeys(addresses))
    if not unique:
        return {}
    got = await _oracle.lookup(chain, unique)
    return {a: got.get(a) for a in unique}
