"""The followers' seam to the sanctions oracle (owned by the holds part; this is the
screening branch's minimal copy of its API, kept at merge as the holds part wrote it).

``install(oracle)`` at start (the daemon); ``answers(chain, addresses)`` before a
converge step's transaction: None when no oracle is installed or it does not cover
``chain``, else the oracle's ``{address: sanctioned or None}``.
"""

from __future__ import annotations

from collections.abc import Sequence

from watcher.screening import oracle as oracle_mod

_oracle: oracle_mod.Oracle | None = None


def install(oracle: oracle_mod.Oracle | None) -> None:
    """Make ``oracle`` the one the followers ask (None: none)."""
    global _oracle
    _oracle = oracle


async def answers(chain: str, addresses: Sequence[str]) -> dict[str, bool | None] | None:
    """The oracle's answers for ``addresses`` on ``chain``, or None without an oracle there."""
    if _oracle is None or chain not in _oracle.chains:
        return None
    return await _oracle.lookup(chain, addresses)
