"""The settlement bookkeeping both families share: rows in PostgreSQL, within 5 s.

Each settlement is a row (``x402_authorizations`` on EVM,
``x402_solana_settlements`` on Solana) claimed before anything is broadcast
and marked ``settled`` only once the chain confirmed it. :func:`settle_row`
is that last step, in the same transaction as consuming the follower's
payment when it was credited first. No database connection is held across an
RPC call: each helper here takes one connection and gives it back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import structlog

from api.errors import DB_ERRORS, service_unavailable
from watcher import db, events, ledger

log = structlog.get_logger(__name__)

DB_TIMEOUT_SECONDS = 5.0
T = TypeVar("T")
# A settlement table's rail in its events' ids (evm-<id>, svm-<id>).
RAILS: dict[ledger.X402Rail, events.X402Rail] = {
    "x402_authorizations": "evm",
    "x402_solana_settlements": "svm",
}


@dataclass(frozen=True, slots=True)
class Settled:
    """A settled payment: the call may be served once."""

    authorization_id: int  # the x402_authorizations or x402_solana_settlements id
    tx_hash: str
    headers: dict[str, str]  # PAYMENT-RESPONSE (v2) or X-PAYMENT-RESPONSE (v1)
    via: str  # how the call was paid: x402-exact (EVM) or x402-exact-solana
    payer: str  # who paid: the EVM address, or the Solana source account's owner
    network: str  # the registry's name of the network it settled on


async def db_value(pool: db.Pool, query: str, *args: Any) -> Any:
    """One named query's first value, within 5 s; a database failure is a 503."""
    try:
        async with asyncio.timeout(DB_TIMEOUT_SECONDS):
            return await pool.fetchval(db.q(query), *args)
    except DB_ERRORS as exc:
        log.warning("x402_db_error", query=query, error=repr(exc))
        raise service_unavailable("the payment database") from exc


async def in_db(pool: db.Pool, work: Callable[[db.Connection], Awaitable[T]], what: str) -> T:
    """Run ``work`` on one pooled connection within 5 s; a database failure is a 503
    (logged with ``what``)."""
    try:
        async with asyncio.timeout(DB_TIMEOUT_SECONDS), pool.acquire() as conn:
            return await work(conn)
    except DB_ERRORS as exc:
        log.warning("x402_db_error", query=what, error=repr(exc))
        raise service_unavailable("the payment database") from exc


async def settle_row(
    conn: db.Connection,
    queries: tuple[str, str, ledger.X402Rail],
    begin_args: tuple[Any, ...],
    payment_key: Callable[[asyncpg.Record], tuple[Any, ...]],
    row_id: int,
) -> bool:
    """One transaction: mark the row settled (``queries[0]``, its lock held), re-read the
    follower's payment under lock in a fresh snapshot (``queries[1]`` with
    ``payment_key(row)`` and the amount), and consume it if credited (``ledger.claim_served``
    for the rail ``queries[2]``). False, with everything rolled back, when the call must not
    be served: the row was no longer open, or its payment was already claimed for an access
    token. A payment not credited yet (or none) is left to ``ledger.credit``, which finds
    the row settled."""
    try:
        async with conn.transaction():
            row = await conn.fetchrow(db.q(queries[0]), *begin_args)
            if row is None:
                return False
            payment = await conn.fetchrow(db.q(queries[1]), *payment_key(row), row["amount"])
            # Claimed (for an access token) first, or by a racing claim: roll back.
            consumed = payment is not None and payment["state"] == "claimed"
            if payment is not None and payment["state"] == "credited":
                consumed = not await ledger.claim_served(conn, queries[2], row_id, payment["id"])
            if consumed:
                raise _Consumed
            # After the payment's link, so the event carries it.
            await events.x402_settlements(
                conn, "x402_settlement.settled", RAILS[queries[2]], [row_id]
            )
            return True
    except _Consumed:
        return False


async def mark_failed(
    pool: db.Pool, rail: ledger.X402Rail, query: str, row_id: int, *args: Any
) -> bool:
    """Mark an open settlement row failed (``query``: x402_mark_failed or
    x402_svm_mark_failed, with ``row_id`` and ``args``) and write its
    ``x402_settlement.failed`` event in the same transaction; False when the row was
    no longer open (nothing written). A database failure is a 503."""

    async def work(conn: db.Connection) -> bool:
        async with conn.transaction():
            failed = await conn.fetchval(db.q(query), row_id, *args)
            if failed is None:
                return False
            await events.x402_settlements(conn, "x402_settlement.failed", RAILS[rail], [row_id])
            return True

    return await in_db(pool, work, query)


class _Consumed(Exception):
    """The payment was consumed elsewhere: roll back, do not serve."""
