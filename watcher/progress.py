"""Follower progress: the heartbeat the systemd watchdog feeds on, and backfill rate logs.

Followers call :func:`beat` after every completed step (also when there was
nothing new): the daemon pings ``WATCHDOG=1`` only while every follower beats,
so a follower stuck in a hung RPC call or a dead loop gets the process
restarted. A standby (not holding the chain's leader lock) beats from its lock
poll: waiting is its job.

:class:`BackfillProgress` turns block counts into a log line at most every
``interval`` seconds with blocks/s, transfers/s and an ETA.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)

_last_beat: dict[str, float] = {}


def beat(chain: str) -> None:
    """Record that ``chain``'s follower (or its standby) completed a step just now."""
    _last_beat[chain] = time.monotonic()


def forget(chain: str) -> None:
    """The follower ended: its silence no longer means it is stuck."""
    _last_beat.pop(chain, None)


def last_beat(chain: str) -> float | None:
    """Monotonic time of the chain's last beat, None if it never beat."""
    return _last_beat.get(chain)


def all_beating(chains: list[str], within: float, now: float | None = None) -> bool:
    """True when each chain beat within the last ``within`` seconds."""
    now = time.monotonic() if now is None else now
    return all((t := _last_beat.get(c)) is not None and now - t <= within for c in chains)


def all_started(chains: list[str]) -> bool:
    """True once every chain beat at least once (its first sync step is done)."""
    return all(c in _last_beat for c in chains)


@dataclass
class BackfillProgress:
    """Rate and ETA of a backfill from ``start`` to ``target`` (blocks or slots, inclusive)."""

    chain: str
    start: int
    target: int
    interval: float = 10.0
    done_blocks: int = 0
    transfers: int = 0
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._last_log = self.started

    def advance(
        self, blocks: int, transfers: int = 0, *, now: float | None = None, final: bool = False
    ) -> bool:
        """Count a processed range; logs (and returns True) when ``interval`` has passed,
        when the target is reached, or on the ``final`` range."""
        self.done_blocks += blocks
        self.transfers += transfers
        now = time.monotonic() if now is None else now
        due = now - self._last_log >= self.interval
        if not (due or final or self.done_blocks >= self.total):
            return False
        self._last_log = now
        log.info("backfill_progress", chain=self.chain, **self.figures(now))
        return True

    @property
    def total(self) -> int:
        return max(0, self.target - self.start + 1)

    def figures(self, now: float | None = None) -> dict[str, float | int | None]:
        """blocks done/total, blocks/s, transfers/s and ETA seconds (None before any rate)."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.started, 1e-9)
        rate = self.done_blocks / elapsed
        remaining = max(0, self.total - self.done_blocks)
        return {
            "blocks_done": self.done_blocks,
            "blocks_total": self.total,
            "blocks_per_second": round(rate, 2),
            "transfers_per_second": round(self.transfers / elapsed, 2),
            "eta_seconds": round(remaining / rate, 1) if rate > 0 else None,
        }
