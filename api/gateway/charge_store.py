"""The charge endpoint's idempotency keys and refunds, in ``gateway_charges``.

A key is scoped to its service key. :func:`claim` takes it ('running', one row per
key by a unique constraint, so of two racing twins one charges); the twin waits for
the answer (bounded by :data:`WAIT_SECONDS`) and gets it back, never a second charge.
:func:`store` keeps the answer for :data:`KEY_TTL`; :func:`release` frees the key of
a call that charged nothing. A row left 'running' past ``idempotency.RUNNING_BOUND``
was lost between charge and store (a crash): 409, use a new key, never a free rerun.

:func:`refund` gives a token or subscriber charge back once, within
:data:`REFUND_WINDOW`, and frees its key (the retry is charged anew), as a 5xx
refund does on our own routes.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog

from api import idempotency
from api.errors import DB_ERRORS, ApiError, service_unavailable
from watcher import db, metrics

log = structlog.get_logger(__name__)

KEY_TTL = timedelta(hours=24)
REFUND_WINDOW = timedelta(minutes=15)
WAIT_SECONDS = 15.0  # a twin waits this long for the first call's answer, then 409
POLL_SECONDS = 0.05
DB_TIMEOUT_SECONDS = 5.0
_REFUND_QUERIES = {"token": "api_refund", "subscription": "stripe_refund_usage"}


@dataclass(frozen=True, slots=True)
class ServiceKey:
    id: int
    name: str
    routes: list[str] | None  # None: every route


@dataclass(frozen=True, slots=True)
class Claimed:
    """This call holds the key: charge, then store (or release)."""

    row_id: int


@dataclass(frozen=True, slots=True)
class Stored:
    """The first call's answer under this key, to send again as is."""

    answer: dict[str, Any]


def _reused(route: str) -> ApiError:
    return ApiError(
        422,
        "idempotency_key_reused",
        f"this idempotency_key was already used for a different request (to {route})",
        "use a fresh idempotency_key for every distinct call; a retry repeats the body exactly",
    )


def _in_progress() -> ApiError:
    return ApiError(
        409,
        "idempotency_key_in_progress",
        "the charge under this idempotency_key is still running",
        "retry in a moment: its answer is returned once it finishes",
        headers={"Retry-After": "1"},
    )


async def _step(
    pool: db.Pool, key_id: int, idem: str, request_hash: bytes, route: str
) -> Claimed | Stored | None:
    """One try: the key taken, the stored answer, or None (wait and look again)."""
    row_id = await pool.fetchval(
        db.q("gateway_charge_claim"), key_id, idem, request_hash, route, KEY_TTL
    )
    if row_id is not None:
        return Claimed(int(row_id))
    prior = await pool.fetchrow(
        db.q("gateway_charge_lookup"), key_id, idem, idempotency.RUNNING_BOUND
    )
    if prior is None:  # released meanwhile: take it on the next try
        return None
    if prior["expired"]:
        await pool.execute(db.q("gateway_charge_forget"), prior["id"])
        return None
    if bytes(prior["request_hash"]) != request_hash:
        raise _reused(prior["route"])
    if prior["state"] == "stored":
        answer: dict[str, Any] = json.loads(prior["response"])
        return Stored(answer)
    if prior["overdue"]:
        raise ApiError(
            409,
            "idempotency_key_abandoned",
            "the charge under this idempotency_key was made but its answer was lost",
            "send the call again with a new idempotency_key (it is charged again)",
        )
    return None


async def claim(
    pool: db.Pool, key_id: int, idem: str, request_hash: bytes, route: str
) -> Claimed | Stored:
    """Take ``idem`` for this call, or the stored answer of the call that took it;
    422 for another body under it, 409 while its twin runs past :data:`WAIT_SECONDS`."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            async with asyncio.timeout(DB_TIMEOUT_SECONDS):
                got = await _step(pool, key_id, idem, request_hash, route)
        except DB_ERRORS as exc:
            log.warning("gateway_charge_db_error", error=repr(exc))
            raise service_unavailable("the database") from exc
        if got is not None:
            if isinstance(got, Stored):
                metrics.METERED_CALLS.labels("replayed").inc()
            return got
        if time.monotonic() >= deadline:
            raise _in_progress()
        await asyncio.sleep(POLL_SECONDS)


async def release(pool: db.Pool, claimed: Claimed) -> None:
    """Free the key of a call that charged nothing (a refusal, a 503)."""
    try:
        async with asyncio.timeout(DB_TIMEOUT_SECONDS):
            await pool.execute(db.q("gateway_charge_forget"), claimed.row_id)
    except DB_ERRORS as exc:  # the key stays 'running': 409s, never a charge
        log.error("gateway_charge_release_failed", row=claimed.row_id, error=repr(exc))


async def store(
    pool: db.Pool,
    claimed: Claimed,
    answer: dict[str, Any],
    rail: str,
    charge_id: str,
    usage_id: int | None,
) -> None:
    """Keep the answer of a charged call for its replays (and its refund)."""
    try:
        async with asyncio.timeout(DB_TIMEOUT_SECONDS):
            await pool.execute(
                db.q("gateway_charge_store"),
                claimed.row_id,
                json.dumps(answer),
                rail,
                charge_id,
                usage_id,
            )
    except DB_ERRORS as exc:  # the payer was charged and is answered; a replay gets 409
        log.error("gateway_charge_store_failed", row=claimed.row_id, error=repr(exc))


def _not_refundable(error: str, message: str) -> ApiError:
    return ApiError(409, error, message, "nothing was refunded")


async def refund(pool: db.Pool, key_id: int, charge_id: str) -> int:
    """Give back a charge this service key made; the token's calls left or the
    subscriber's calls used after it. 404 unknown, 409 x402, refunded, too late."""
    try:
        async with (
            asyncio.timeout(DB_TIMEOUT_SECONDS),
            pool.acquire() as conn,
            conn.transaction(),
        ):
            row = await conn.fetchrow(
                db.q("gateway_charge_for_refund"), key_id, charge_id, REFUND_WINDOW
            )
            query, row_id, usage_id = _check_refundable(row, charge_id)
            await conn.execute(db.q("gateway_charge_mark_refunded"), row_id)
            after = await conn.fetchval(db.q(query), usage_id, None)
    except DB_ERRORS as exc:
        log.warning("gateway_charge_db_error", error=repr(exc))
        raise service_unavailable("the database") from exc
    metrics.METERED_CALLS.labels("refunded").inc()
    return int(after or 0)


def _check_refundable(row: Any, charge_id: str) -> tuple[str, int, int]:
    """The refund query, the row and the usage row of a refundable charge; else 404/409."""
    if row is None:
        raise ApiError(
            404,
            "unknown_charge",
            f"no charge {charge_id} made with this service key",
            "use the charge_id of an answer of POST /gateway/charge made with this key",
        )
    query = _REFUND_QUERIES.get(row["rail"])
    if query is None or row["usage_id"] is None:
        raise _not_refundable(
            "charge_not_refundable",
            f"a {row['rail']} charge cannot be refunded here (an x402 payment moved on chain)",
        )
    if row["refunded_at"] is not None:
        raise _not_refundable("charge_already_refunded", f"{charge_id} was already refunded")
    if not row["in_window"]:
        raise _not_refundable(
            "refund_window_passed",
            f"a charge can be refunded within {int(REFUND_WINDOW.total_seconds() // 60)} minutes",
        )
    return query, int(row["id"]), int(row["usage_id"])
