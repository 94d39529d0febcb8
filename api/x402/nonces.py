"""The relayer's account nonces, handed out by PostgreSQL so API processes can share one key.

An EVM account's transactions are mined in nonce order, one per nonce. Two API
processes that each ask the node for the pending count and sign with it pick
the same nonce whenever they settle at once: one transaction wins, the node
refuses the other ("nonce too low", "replacement transaction underpriced")
and a payment that was fine is answered 503. One process avoided this with an
asyncio lock; several processes need the database, which they all share.

The choice, and why:

* **A row per (network, relayer address), not a lock across the send.** Its
  row lock (``SELECT ... FOR UPDATE`` by way of an upsert) is held by one
  short database transaction: choose the nonce, sign (local, ~1 ms), store the
  signed transaction, mark the authorization ``settling``, commit. Nothing on
  the chain is awaited under it, so no pooled connection waits on an RPC node
  and a process killed mid-way leaves no lock behind (a transaction lock dies
  with its connection; there is no session lock to forget on a pooled one).
  The broadcast happens after the commit, outside every lock: several
  processes send at once and a node queues a nonce that arrives early.
* **The nonce is ``max(stored next, the node's pending count)``**: the node
  moves us forward when the key was used elsewhere (an operator, a restored
  backup); the row keeps us from reusing a nonce that the node has not seen
  yet (handed out a millisecond ago by another process, not broadcast yet).
* **Every signed transaction is stored before it is broadcast.** This is what
  makes the gaps harmless. A nonce handed out but missing at the node (the
  process crashed between commit and send, the send timed out before
  arriving, the node dropped it from its pool) would hold back every later
  nonce forever; instead, whoever settles next sees the node's pending count
  below our stored next nonce and re-broadcasts the stored bytes (the same
  transaction, the same hash: never a second transaction for one
  authorization), and each waiting process re-sends its own while it waits.
  Only a transaction the node refuses for good (not "already known", "nonce
  too low" or "underpriced", which say another copy is there) gives its nonce
  back: ``refused``, and the next settlement signs its own transfer with it.
* **Per process, one allocation at a time** (the app's asyncio lock per
  network): concurrent payments in one process queue in memory, not each on
  a pooled connection blocked on the row lock.

EIP-3009 itself guarantees an authorization moves money at most once: its
nonce is spent on chain by the first transfer that executes it. We never sign
a second transaction for one authorization, so a lost race costs no gas.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from api.x402 import records
from watcher import db

RESEND_AFTER_SECONDS = 3.0  # younger transactions may still be on their way to the node
RESEND_BATCH = 16  # the most stored transactions one settlement re-broadcasts


@dataclass(frozen=True, slots=True)
class Signed:
    """One signed transaction, stored under its nonce."""

    nonce: int
    tx_hash: str
    raw: str  # 0x-hex, what eth_sendRawTransaction takes
    behind: bool  # the node's pending count was below our next nonce: some may be lost


Signer = Callable[[int], tuple[str, str]]  # nonce -> (tx hash, raw transaction)


async def sign_next(
    pool: db.Pool, chain: str, address: str, pending: int, sign: Signer, auth_id: int
) -> Signed:
    """Hand out the next nonce of ``address`` on ``chain``, sign with it (``sign``), store the
    transaction and mark the authorization ``settling``, in one short database transaction
    (a 503 if the database fails: nothing was sent). ``pending`` is the node's pending
    count, read before (no connection is held across that call)."""

    async def work(conn: db.Connection) -> Signed:
        async with conn.transaction():
            stored = int(await conn.fetchval(db.q("relayer_nonce_lock"), chain, address, pending))
            nonce = max(stored, pending)
            if pending < stored:  # a refused nonce below ours goes first: it holds back the rest
                reuse = await conn.fetchval(
                    db.q("relayer_nonce_reusable"), chain, address, pending, stored
                )
                if reuse is not None:
                    nonce = int(reuse)
                    await conn.execute(db.q("relayer_tx_replace"), chain, address, nonce)
            if nonce >= stored:
                await conn.execute(db.q("relayer_nonce_advance"), chain, address, nonce + 1)
            tx_hash, raw = sign(nonce)
            await conn.execute(
                db.q("relayer_tx_insert"), chain, address, nonce, tx_hash, raw, auth_id
            )
            await conn.execute(db.q("x402_mark_settling"), auth_id, tx_hash)
        return Signed(nonce, tx_hash, raw, behind=pending < stored)

    return await records.in_db(pool, work, "relayer_sign_next")


async def unconfirmed(
    pool: db.Pool, chain: str, address: str, pending: int
) -> list[asyncpg.Record]:
    """Stored live transactions at or above the node's ``pending`` count, old enough to have
    arrived had they been sent (lowest nonce first, at most :data:`RESEND_BATCH`)."""

    async def work(conn: db.Connection) -> list[asyncpg.Record]:
        return list(
            await conn.fetch(
                db.q("relayer_tx_unconfirmed"),
                chain,
                address,
                pending,
                RESEND_AFTER_SECONDS,
                RESEND_BATCH,
            )
        )

    return await records.in_db(pool, work, "relayer_tx_unconfirmed")


async def refused(pool: db.Pool, tx_hash: str) -> None:
    """The node refused ``tx_hash`` for good: its nonce is handed out again."""
    await records.db_value(pool, "relayer_tx_refused", tx_hash)
