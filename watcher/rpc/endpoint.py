"""What the pool knows about one endpoint: recent health, circuit breaker, rate limit, head.

Pure bookkeeping on a monotonic clock: no I/O, so every rule here reads in one
place. The pool asks :meth:`Endpoint.available` and :meth:`Endpoint.claim`
before sending, and reports every ending with :meth:`Endpoint.succeeded`,
:meth:`Endpoint.failed` or :meth:`Endpoint.rate_limited`.

Breaker: ``closed`` until ``failure_threshold`` consecutive transport failures,
then ``open`` for ``cooldown`` seconds; after that exactly one request is let
through (``half_open``); its success closes the breaker, its failure opens it
again for another cool-down.
"""

from __future__ import annotations

import enum
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import structlog

from watcher import metrics


class Circuit(enum.IntEnum):
    """Breaker state; the value is what ``watcher_rpc_circuit_state`` exports."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True)
class Policy:
    """Tuning of a pool. Defaults suit public providers; tests shrink the times."""

    timeout: float = 10.0  # one HTTP exchange
    deadline: float = 30.0  # one request() / batch() / head(), every retry included
    max_attempts: int = 4  # passes over the endpoints before giving up
    backoff: float = 0.2  # first wait between passes; doubles, with as much jitter
    backoff_max: float = 3.0
    failure_threshold: int = 5  # consecutive failures that open the breaker
    cooldown: float = 15.0  # seconds a breaker stays open before one probe
    window: int = 50  # outcomes kept for health
    window_seconds: float = 60.0  # ... and only this recent
    min_success_rate: float = 0.8
    slow_latency: float = 2.0  # p50 above this is unhealthy
    rate_limit_default: float = 1.0  # put aside after a 429 that names no wait
    max_retry_after: float = 300.0  # cap a provider's Retry-After
    max_head_lag: int | None = None  # None: 5 blocks (EVM), 50 slots (Solana)
    head_probe_interval: float = 15.0  # head(): ask every endpoint this often
    max_batch: int = 100  # calls per JSON-RPC batch


@dataclass(frozen=True)
class EndpointStatus:
    """A snapshot of one endpoint for operators (``watcher doctor``, health pages)."""

    label: str
    healthy: bool
    circuit: str  # closed, half_open, open
    refused: str | None  # permanent: wrong chain, unverifiable
    demoted: str | None  # head lagging or going backwards
    rate_limited_for: float  # seconds left, 0 when not set aside
    head: int | None
    latency_p50: float | None  # seconds, over the recent window
    success_rate: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(eq=False)  # identity: endpoints are keys in probe rounds
class Endpoint:
    """One URL of the pool and everything learned about it."""

    chain: str
    url: str
    label: str
    index: int  # configured order: wins among equally healthy endpoints
    policy: Policy
    verified: bool = False
    refused: str | None = None
    demoted: str | None = None
    sick: str | None = None  # Solana getHealth complaint from the last probe
    batch_limit: int = 0  # 0: not learned yet, use the policy's
    circuit: Circuit = Circuit.CLOSED
    consecutive_failures: int = 0
    open_until: float = 0.0
    probing: bool = False
    aside_until: float = 0.0
    head: int | None = None
    head_at: float = 0.0
    max_head: int | None = None
    recent: deque[tuple[float, bool, float]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self._oks = 0  # successes in ``recent``
        self._p50: float | None = None  # cached median latency of ``recent``
        self._exported: tuple[int, int] | None = None
        self.log = structlog.get_logger("watcher.rpc").bind(chain=self.chain, endpoint=self.label)
        self._export()

    # ---- availability -------------------------------------------------------------

    def available(self, now: float) -> bool:
        """May a request be sent here now (a half-open probe counts)?"""
        if self.refused is not None or self.aside_until > now:
            return False
        if self.circuit is Circuit.CLOSED:
            return True
        return not self.probing and now >= self.open_until

    def ready_at(self, now: float) -> float:
        """Earliest monotonic time at which :meth:`available` may turn true."""
        if self.refused is not None:
            return float("inf")
        at = self.aside_until
        if self.circuit is not Circuit.CLOSED:
            # A probe in flight ends within one timeout; look again soon.
            at = max(at, now + 0.05 if self.probing else self.open_until)
        return max(at, now)

    def probe_due(self, now: float) -> bool:
        return self.circuit is not Circuit.CLOSED and not self.probing and now >= self.open_until

    def claim(self, now: float) -> bool:
        """Take the slot for one request; False if another task took the only probe."""
        if not self.available(now):
            return False
        if self.circuit is not Circuit.CLOSED:
            self.probing = True
            self._set_circuit(Circuit.HALF_OPEN)
        return True

    def release(self) -> None:
        """End a probe that was cancelled before an outcome: the next one may go."""
        if self.probing:
            self.probing = False
            self._set_circuit(Circuit.OPEN)

    # ---- outcomes -----------------------------------------------------------------

    def succeeded(self, latency: float, now: float) -> None:
        """The node answered (a JSON-RPC error object is an answer too)."""
        self._remember(now, True, latency)
        self.consecutive_failures = 0
        if self.circuit is not Circuit.CLOSED:
            self.log.info("rpc_circuit_closed")
        self.probing = False
        self._set_circuit(Circuit.CLOSED)

    def failed(self, latency: float, now: float, reason: str) -> None:
        """Unreachable, timed out, 5xx or garbage: counts toward opening the breaker."""
        self._remember(now, False, latency)
        self.consecutive_failures += 1
        was_probe, self.probing = self.probing, False
        if was_probe or self.consecutive_failures >= self.policy.failure_threshold:
            self.open_until = now + self.policy.cooldown
            if self.circuit is not Circuit.OPEN:
                self.log.warning(
                    "rpc_circuit_open",
                    failures=self.consecutive_failures,
                    cooldown_s=self.policy.cooldown,
                    reason=reason,
                )
            self._set_circuit(Circuit.OPEN)
        else:
            self._export()

    def rate_limited(self, wait: float | None, latency: float, now: float) -> None:
        """Set aside for the provider's wait (bounded); not a breaker failure."""
        self._remember(now, False, latency)
        if self.probing:  # the probe got an answer: the endpoint is up
            self.probing = False
            self.consecutive_failures = 0
            self._set_circuit(Circuit.CLOSED)
        chosen = self.policy.rate_limit_default if wait is None else wait
        chosen = min(max(chosen, 0.0), self.policy.max_retry_after)
        self.aside_until = max(self.aside_until, now + chosen)
        self.log.warning("rpc_rate_limited", aside_s=round(chosen, 3))
        self._export()

    def refuse(self, reason: str) -> None:
        """Never use this endpoint again (wrong chain): logged at error."""
        self.refused = reason
        self.log.error("rpc_endpoint_refused", reason=reason)
        self._export()

    # ---- heads --------------------------------------------------------------------

    def note_head(self, head: int, now: float) -> None:
        """Record a head this endpoint reported (the pool judges it against the others)."""
        self.head, self.head_at = head, now
        self.max_head = head if self.max_head is None else max(self.max_head, head)

    def demote(self, reason: str) -> None:
        if self.demoted != reason:
            self.log.warning("rpc_endpoint_demoted", reason=reason)
        self.demoted = reason
        self._export()

    def promote(self) -> None:
        if self.demoted is not None:
            self.log.info("rpc_endpoint_trusted_again", head=self.head)
        self.demoted = None
        self._export()

    # ---- health -------------------------------------------------------------------

    def _remember(self, now: float, ok: bool, latency: float) -> None:
        self.recent.append((now, ok, latency))
        self._oks += ok
        self._p50 = None
        self._prune(now)

    def _prune(self, now: float) -> None:
        # Entries arrive in time order, so the stale ones are all on the left.
        horizon = now - self.policy.window_seconds
        while self.recent and (
            self.recent[0][0] < horizon or len(self.recent) > self.policy.window
        ):
            self._oks -= self.recent.popleft()[1]
            self._p50 = None

    def success_rate(self) -> float | None:
        self._prune(time.monotonic())
        return self._oks / len(self.recent) if self.recent else None

    def latency_p50(self) -> float | None:
        self._prune(time.monotonic())
        if self._p50 is None and self.recent:
            self._p50 = statistics.median(lat for _, _, lat in self.recent)
        return self._p50

    def well(self) -> bool:
        """Recent success rate and latency are acceptable (no recent data counts as well)."""
        rate, p50 = self.success_rate(), self.latency_p50()
        if rate is not None and rate < self.policy.min_success_rate:
            return False
        return p50 is None or p50 <= self.policy.slow_latency

    def healthy(self) -> bool:
        """Usable and trusted: what ``watcher_rpc_endpoint_healthy`` exports."""
        return (
            self.refused is None
            and self.demoted is None
            and self.circuit is Circuit.CLOSED
            and self.well()
        )

    def status(self, now: float) -> EndpointStatus:
        p50 = self.latency_p50()
        return EndpointStatus(
            label=self.label,
            healthy=self.healthy(),
            circuit=self.circuit.name.lower(),
            refused=self.refused,
            demoted=self.demoted,
            rate_limited_for=round(max(0.0, self.aside_until - now), 3),
            head=self.head,
            latency_p50=None if p50 is None else round(p50, 6),
            success_rate=self.success_rate(),
        )

    def describe(self, now: float) -> str:
        """One phrase for error messages: why this endpoint did not answer."""
        if self.refused:
            return f"{self.label} refused ({self.refused})"
        if self.circuit is not Circuit.CLOSED:
            left = max(0.0, self.open_until - now)
            return f"{self.label} circuit {self.circuit.name.lower()} (probe in {left:.3g}s)"
        if self.aside_until > now:
            return f"{self.label} rate limited for {self.aside_until - now:.3g}s"
        if self.demoted:
            return f"{self.label} demoted ({self.demoted})"
        return f"{self.label} failing"

    def _set_circuit(self, state: Circuit) -> None:
        self.circuit = state
        self._export()

    def _export(self) -> None:
        now = (int(self.circuit), 1 if self.healthy() else 0)
        if now == self._exported:
            return  # gauges unchanged: skip the label lookups on the hot path
        self._exported = now
        metrics.RPC_CIRCUIT_STATE.labels(self.chain, self.label).set(now[0])
        metrics.RPC_HEALTHY.labels(self.chain, self.label).set(now[1])
