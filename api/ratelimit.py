"""Per-client rate limits shared by every API process: counters live in PostgreSQL.

A fixed one-minute window per ``(bucket, client)``: one upsert per request
returns the count so far; over the limit is a 429 with ``Retry-After`` (the
seconds left in the window). Windows older than a few minutes are pruned now
and then by whichever process happens to be serving.

Use ``Depends(ratelimit.limit("verify-payment"))`` on a route; the limits per
minute come from the seed's configuration (``LIMITS``).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

import structlog
from fastapi import Request

from api import clientip
from api.errors import DB_ERRORS, ApiError, service_unavailable
from watcher import db, metrics
from watcher.settings import Settings

log = structlog.get_logger(__name__)

LIMITS: dict[str, int] = {
    "verify-payment": 5,
    "generate-token": 10,
    "supported-chains": 20,
    "pricing": 30,
    "cleanup": 1,
    "stripe-webhook": 30,
    # Not in the seed: invoices reserve one of a few thousand unique amounts for
    # 90 minutes, so an unlimited client could exhaust them.
    "invoices": 10,
}
PRUNE_EVERY = 500  # requests per process between deletes of stale windows

_hits = itertools.count(1)


def client_id(request: Request) -> str:
    """The client's bucket: its address (an IPv6 /64), through trusted proxies only."""
    settings: Settings = request.app.state.settings
    peer = request.client.host if request.client else None
    addr = clientip.resolve(
        peer, request.headers.getlist("x-forwarded-for"), settings.trusted_proxies()
    )
    return clientip.bucket(addr) if addr is not None else (peer or "unknown")


async def hit(pool: db.Pool, bucket: str, client: str, per_minute: int) -> None:
    """Count one request; raises a 429 ApiError when the client is over the limit."""
    try:
        row = await pool.fetchrow(db.q("api_rate_hit"), bucket, client)
        if next(_hits) % PRUNE_EVERY == 0:
            await pool.execute(db.q("api_rate_prune"))
    except DB_ERRORS as exc:
        log.warning("rate_limit_db_error", error=repr(exc))
        raise service_unavailable("the database") from exc
    assert row is not None
    if row["hits"] > per_minute:
        metrics.API_RATE_LIMITED.labels(bucket).inc()
        retry = int(row["retry_after"])
        raise ApiError(
            429,
            "rate_limited",
            f"more than {per_minute} requests a minute to {bucket} from your address",
            f"wait {retry} s and retry",
            headers={"Retry-After": str(retry)},
            limit_per_minute=per_minute,
            retry_after_seconds=retry,
        )


def limit(bucket: str) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency enforcing ``LIMITS[bucket]`` per client."""
    per_minute = LIMITS[bucket]

    async def dependency(request: Request) -> None:
        await hit(request.app.state.pool, bucket, client_id(request), per_minute)

    return dependency
