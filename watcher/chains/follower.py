"""What every chain family hands the daemon: one named, long-running follower per network.

Each family module (``evm``, ``solana``) has ``followers(settings, pool)``, returning
one :class:`Follower` per enabled network; the daemon runs them under the leader
lock. Defined here, below both the families and the daemon, so that neither
imports the other to name it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Follower:
    """A long-running chain follower: ``run(stop)`` returns when ``stop`` is set."""

    chain: str
    run: Callable[[asyncio.Event], Awaitable[None]]
