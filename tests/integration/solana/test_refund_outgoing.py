"""The Solana follower's outgoing hook on PostgreSQL: a finalized transfer out of the export
wallet links the oldest exported refund it pays, once, however often it is handed over."""

from __future__ import annotations

from dataclasses import dataclass, field

from solders.keypair import Keypair

from devkit.api_support import record_payment
from watcher import db
from watcher.chains import solana_outgoing
from watcher.refunds import outgoing, store

MINT = str(Keypair().pubkey())


@dataclass(frozen=True)
class Seen:
    final: bool
    outgoing: list[outgoing.Outgoing] = field(default_factory=list)


async def exported(pool: db.Pool, payer: str, wallet: str, amount: int) -> int:
    pid, _ = await record_payment(
        pool,
        chain="solana",
        tx_hash=str(Keypair().pubkey()) * 2,
        from_address=payer,
        to_address=str(Keypair().pubkey()),
        token=MINT,
        amount=amount,
    )
    ask = store.Ask(
        payment_id=pid,
        kind="whole",
        reason="the payer asked",
        operator="ops",
        refund_key=store.new_key(),
        destination=payer,
        proof="source",
        price=100_000,
    )
    async with pool.acquire() as conn:
        row, _ = await store.create(conn, ask)
        assert await store.mark_exported(conn, int(row["id"]), wallet)
    return int(row["id"])


async def test_a_transfer_seen_twice_links_one_refund(pool: db.Pool) -> None:
    payer, wallet = str(Keypair().pubkey()), str(Keypair().pubkey())
    first = await exported(pool, payer, wallet, 700_000)
    second = await exported(pool, payer, wallet, 700_000)  # the same refund asked twice
    sig = str(Keypair().pubkey()) * 2
    out = outgoing.Outgoing(sig, 3, 120, None, wallet, payer, 700_000, MINT)
    not_yet = [Seen(final=False, outgoing=[out])]
    async with pool.acquire() as conn, conn.transaction():
        assert await solana_outgoing.observe(conn, "solana", not_yet) == []
    assert await pool.fetchval("SELECT count(*) FROM refunds WHERE out_tx_hash IS NOT NULL") == 0
    for _ in range(2):  # a batch re-read hands the same finalized transfer over again
        async with pool.acquire() as conn, conn.transaction():
            await solana_outgoing.observe(conn, "solana", [Seen(final=True, outgoing=[out])])
    rows = {
        r["id"]: r
        for r in await pool.fetch("SELECT id, status, out_tx_hash FROM refunds ORDER BY id")
    }
    assert (rows[first]["status"], rows[first]["out_tx_hash"]) == ("confirmed", sig)
    assert (rows[second]["status"], rows[second]["out_tx_hash"]) == ("exported", None)
