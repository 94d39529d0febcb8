"""The refund ledger on PostgreSQL: one transaction voids the token, records the refund,
audits and events it; a refund key repeats; the followers' hook links and confirms."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest
from eth_account import Account

from devkit.api_support import BASE_USDC, record_payment
from watcher import db, ledger
from watcher.refunds import model, outgoing, store

PRICE = 100_000


def ask(payment_id: int, kind: str, dest: str, key: str | None = None) -> store.Ask:
    return store.Ask(
        payment_id=payment_id,
        kind=kind,
        reason="asked by the payer",
        operator="alice",
        refund_key=key or store.new_key(),
        destination=dest,
        proof="source",
        price=PRICE,
    )


async def claim(pool: db.Pool, payment_id: int) -> int:
    async with pool.acquire() as conn:
        row = await ledger.claim(
            conn,
            secrets.token_bytes(32),
            payment_id,
            price=PRICE,
            lifetime=timedelta(hours=1),
            max_requests=2**31 - 1,
        )
    assert row is not None
    return int(row["id"])


async def test_unconsumed_part_shrinks_the_token_and_a_repeat_is_the_same_refund(
    pool: db.Pool,
) -> None:
    payer = Account.create().address.lower()
    pid, _ = await record_payment(pool, from_address=payer, amount=1_000_000)
    token = await claim(pool, pid)
    await pool.execute("UPDATE access_tokens SET remaining = 6 WHERE id = $1", token)
    async with pool.acquire() as conn:
        row, made = await store.create(conn, ask(pid, "unconsumed", payer, "rf-one"))
        again, twice = await store.create(conn, ask(pid, "unconsumed", payer, "rf-one"))
        with pytest.raises(model.Refused) as exc:
            await store.create(conn, ask(pid, "whole", payer, "rf-one"))
    assert made and not twice and again["id"] == row["id"]
    assert exc.value.code == "refund_key_reused"
    assert (row["status"], int(row["amount"]), row["calls"]) == ("requested", 600_000, 6)
    assert await pool.fetchval("SELECT remaining FROM access_tokens WHERE id = $1", token) == 0
    audit = await pool.fetchrow(
        "SELECT * FROM admin_audit WHERE subject = $1", f"refund:{row['id']}"
    )
    assert audit["operator"] == "alice" and audit["action"] == "refund.request"
    types = await pool.fetch("SELECT type FROM events WHERE resource_id = $1", f"ref_{row['id']}")
    assert [r["type"] for r in types] == ["refund.requested"]
    # what is left: the four calls served are kept; nothing more is refundable
    async with pool.acquire() as conn:
        with pytest.raises(model.Refused) as exc:
            await store.create(conn, ask(pid, "whole", payer))
    assert exc.value.code == "nothing_refundable"


async def test_a_whole_refund_before_the_claim_leaves_nothing_to_claim(pool: db.Pool) -> None:
    payer = Account.create().address.lower()
    pid, _ = await record_payment(pool, from_address=payer, amount=1_000_000)
    async with pool.acquire() as conn:
        row, _ = await store.create(conn, ask(pid, "whole", payer))
        claimed = await ledger.claim(
            conn,
            secrets.token_bytes(32),
            pid,
            price=PRICE,
            lifetime=timedelta(hours=1),
            max_requests=2**31 - 1,
        )
    assert int(row["amount"]) == 1_000_000 and claimed is None
    assert await pool.fetchval("SELECT count(*) FROM access_tokens WHERE payment_id = $1", pid) == 0


async def test_an_observed_payment_is_not_refundable(pool: db.Pool) -> None:
    pid, _ = await record_payment(pool, amount=1_000_000, credit=False)
    async with pool.acquire() as conn:
        with pytest.raises(model.Refused) as exc:
            await store.create(conn, ask(pid, "whole", "0x" + "11" * 20))
    assert exc.value.code == "payment_not_refundable"


async def test_the_hook_links_an_exported_refund_confirms_it_deep_and_forgets_on_rewind(
    pool: db.Pool,
) -> None:
    payer = Account.create().address.lower()
    wallet = "0x" + "77" * 20
    pid, _ = await record_payment(pool, from_address=payer, amount=1_000_000)
    async with pool.acquire() as conn:
        row, _ = await store.create(conn, ask(pid, "whole", payer))
        assert await store.mark_exported(conn, int(row["id"]), wallet)
        out = outgoing.Outgoing(
            tx_hash="0x" + "ee" * 32,
            log_index=2,
            block_number=50,
            block_hash="0x" + "bb" * 32,
            from_address=wallet,
            to_address=payer,
            amount=1_000_000,
            token=BASE_USDC,
        )
        other = outgoing.Outgoing(
            tx_hash="0x" + "ef" * 32,
            log_index=0,
            block_number=50,
            block_hash="0x" + "bb" * 32,
            from_address=wallet,
            to_address=payer,
            amount=999_999,
            token=BASE_USDC,
        )
        async with conn.transaction():
            assert await outgoing.observe(conn, "base", [out, other], deep=49) == []
        async with conn.transaction():
            assert await outgoing.observe(conn, "base", [], deep=50) == [row["id"]]
        got = await store.by_id(conn, int(row["id"]))
        assert got is not None and got["status"] == "confirmed" and got["out_log_index"] == 2
        async with conn.transaction():
            assert await outgoing.forget(conn, "base", 49) == [row["id"]]
        back = await store.by_id(conn, int(row["id"]))
    assert back is not None and back["status"] == "exported" and back["out_tx_hash"] is None


async def test_a_transfer_seen_again_links_one_exported_refund_and_never_stops_the_follower(
    pool: db.Pool,
) -> None:
    # Two exported refunds of the same amount to the same payer; the follower sees the
    # one transfer paying the first twice (a restart re-scans the range before it is deep).
    payer = Account.create().address.lower()
    wallet = "0x" + "78" * 20
    first, _ = await record_payment(pool, from_address=payer, amount=1_000_000)
    second, _ = await record_payment(pool, from_address=payer, amount=1_000_000)
    async with pool.acquire() as conn:
        a, _ = await store.create(conn, ask(first, "whole", payer))
        b, _ = await store.create(conn, ask(second, "whole", payer))
        assert await store.mark_exported(conn, int(a["id"]), wallet)
        assert await store.mark_exported(conn, int(b["id"]), wallet)
        out = outgoing.Outgoing(
            tx_hash="0x" + "e1" * 32,
            log_index=0,
            block_number=60,
            block_hash="0x" + "b1" * 32,
            from_address=wallet,
            to_address=payer,
            amount=1_000_000,
            token=BASE_USDC,
        )
        for _ in range(2):
            async with conn.transaction():
                assert await outgoing.observe(conn, "base", [out], deep=59) == []
        linked = [await store.by_id(conn, int(r["id"])) for r in (a, b)]
    assert [r["out_tx_hash"] for r in linked if r is not None] == [out.tx_hash, None]


async def test_refunded_money_leaves_the_revenue_the_stats_show(pool: db.Pool) -> None:
    payer = Account.create().address.lower()
    pid, _ = await record_payment(pool, from_address=payer, amount=2_000_000)
    before = await pool.fetchrow("SELECT * FROM v_x402_stats_24h WHERE chain = 'base'")
    async with pool.acquire() as conn, conn.transaction():
        await store.create(conn, ask(pid, "whole", payer))
    after = await pool.fetchrow("SELECT * FROM v_x402_stats_24h WHERE chain = 'base'")
    assert after["amount_credited"] == before["amount_credited"]  # it was credited
    assert after["amount_refunded"] - before["amount_refunded"] == 2_000_000
    assert after["amount_net"] == after["amount_credited"] - after["amount_refunded"]
    top = await pool.fetchrow(
        "SELECT amount_total FROM v_x402_top_payers WHERE payer = $1 AND chain = 'base'", payer
    )
    assert top is not None and top["amount_total"] == 0
