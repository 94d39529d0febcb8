"""``invoice.paid``: a payment for an open invoice is seen on chain, not yet credited.

Run by ``ledger.record`` in the follower's transaction, right after the payments'
``payment.observed`` events. The invoice a payment would pay is found by the one
matching rule the credit links with (query ``link_invoices``, which writes nothing
for observed payments), so the announcement and the later link cannot disagree.
``invoices.status`` stays ``open`` until the credit: the status guards the EVM
unique-amount index and the amount holds. One announcement per pending payment:
an invoice already announced by a payment that is still observed (and was not
orphaned since) is not announced again; one whose payment was orphaned is
announced again when a payment (the same transfer re-included, or another) is
observed for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import asyncpg

from watcher import db, events


async def announce(
    conn: db.Connection,
    recorded: Sequence[asyncpg.Record],
    *,
    grace: timedelta,
    hold: timedelta,
) -> int:
    """Write ``invoice.paid`` for the open invoices the newly observed rows would pay.

    ``recorded``: the rows ``record_transfers`` returned (only ``observed`` ones count).
    Returns how many invoices were announced. Runs in the caller's transaction.
    """
    ids = [r["id"] for r in recorded if r["state"] == "observed"]
    if not ids:
        return 0
    found = await conn.fetch(db.q("link_invoices"), ids, grace, hold)
    return await events.invoices(
        conn,
        "invoice.paid",
        [r["invoice_id"] for r in found],
        [r["payment_id"] for r in found],
    )
