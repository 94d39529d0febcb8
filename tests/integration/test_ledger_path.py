"""One credit path, database side: no function or trigger moves a payment behind the ledger.

The x402 links that triggers of 0008/0009 made when a payment was credited or
orphaned are ledger functions now (tests/integration/test_x402_ledger.py and the
x402 suites check their effect); this checks that no trigger or SQL function of
the migrated schema still writes ``payments.state``, so a new statement that moves
a payment cannot rely on one silently.
"""

from __future__ import annotations

import secrets

from tests.unit.test_one_credit_path import ROOT, writes_payment_state
from watcher import db, ledger

# Triggers allowed on payments: none of them moves a payment's state.
PAYMENT_TRIGGERS = {
    "payments_default_transfer_key",  # 0010: a row written without a key gets its position
    "payments_x402_reorged_after_credit",  # 0008: the flag set -> its x402 row 'reorged'
    "payments_x402_relanded",  # 0010: the flag cleared -> a served x402 row 'settled' again
    "payments_fill_family",  # networks migration: the network's family, from `networks`
}


async def test_no_trigger_on_payments_moves_a_payment(pool: db.Pool) -> None:
    names = await pool.fetch(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'payments'::regclass AND NOT tgisinternal"
    )
    assert {r["tgname"] for r in names} == PAYMENT_TRIGGERS


async def test_no_database_function_writes_a_payments_state(pool: db.Pool) -> None:
    rows = await pool.fetch(
        "SELECT p.proname, p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = current_schema() AND p.prokind = 'f'"
    )
    assert len(rows) >= 5  # the scan sees the schema's functions
    assert [r["proname"] for r in rows if writes_payment_state(r["prosrc"])] == []
    # What it would have caught before the one credit path: 0008's link trigger.
    assert writes_payment_state((ROOT / "migrations" / "0008_x402.sql").read_text())


async def test_an_operator_settle_consumes_a_served_settlement_as_a_credit_does(
    pool: db.Pool,
) -> None:
    """A settled x402 authorization whose transfer the followers missed: the operator's
    settle goes through the same step as a follower's credit, so the served call's
    payment is consumed, never left to buy a token as well."""
    tx = "0x" + secrets.token_hex(32)
    payer, us, token, price = "0x" + "cc" * 20, "0x" + "aa" * 20, "0x" + "bb" * 20, 100_000
    auth_id = await pool.fetchval(
        db.q("x402_claim_authorization"),
        *("base", token, payer, us, price, "0x" + secrets.token_hex(32), 0, 2**40),
        *("0x" + "11" * 65, 2, "http://testserver/x402/example/paid", "relayer"),
    )
    await pool.execute(db.q("x402_mark_settling"), auth_id, tx)
    await pool.execute(db.q("x402_begin_settled"), auth_id, tx)
    seen = ledger.Transfer(
        chain="base",
        tx_hash=tx,
        log_index=0,
        block_number=10,
        block_hash="0x" + "01" * 32,
        token=token,
        to_address=us,
        amount=price,
        from_address=payer,
    )
    async with pool.acquire() as conn, conn.transaction():
        (row,) = await ledger.record(conn, [seen])
        await ledger.orphan(conn, [row["id"]], "reorged out")
        assert await ledger.admin_settle(conn, row["id"], "settle by operator: seen on chain")
    payment = await pool.fetchrow("SELECT state, reason FROM payments WHERE id = $1", row["id"])
    auth = await pool.fetchrow(db.q("x402_authorization"), auth_id)
    assert payment["state"] == "claimed" and f"authorization {auth_id}" in payment["reason"]
    assert (auth["status"], auth["payment_id"]) == ("settled", row["id"])
