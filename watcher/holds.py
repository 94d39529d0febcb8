"""The review of held payments (issue 16), shared by the admin API and ``watcher holds``.

A payment a screening rule fires for at credit is ``held`` (watcher/ledger.py);
an operator lists the queue (oldest first, each with its risk), looks at one,
and releases it (-> credited, then as any credit) or rejects it (-> rejected:
never claimable, refundable). Both go through ``ledger.release`` /
``ledger.reject`` in one transaction with their audit row and events. Money
leaves as exact strings of base units.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from watcher import db, ledger, metrics, money

Action = Literal["release", "reject"]
LIST_LIMIT = 500
NOTE_MAX = 500


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a release or reject did: ``payment`` as it now is (None: no such payment),
    and whether it moved (False: it was not held; ``payment['state']`` says what it is)."""

    payment: dict[str, Any] | None
    moved: bool


def shown(row: asyncpg.Record) -> dict[str, Any]:
    """A payment as the review shows it (the risk as JSON, the amount exact)."""
    out = dict(row)
    out["amount"] = money.units_text(row["amount"])
    out["usd"] = money.usd(int(row["amount"]))
    out["risk"] = None if row["risk"] is None else json.loads(row["risk"])
    return out


async def queue(conn: db.Connection, limit: int = LIST_LIMIT) -> list[dict[str, Any]]:
    """The payments held now, oldest hold first."""
    return [shown(r) for r in await conn.fetch(db.q("holds_list"), limit)]


async def payment(conn: db.Connection, payment_id: int) -> dict[str, Any] | None:
    """One payment as the review shows it; None if there is none."""
    row = await conn.fetchrow(db.q("holds_payment"), payment_id)
    return None if row is None else shown(row)


async def review(
    conn: db.Connection,
    action: Action,
    payment_id: int,
    operator: str,
    note: str,
    *,
    client: str | None = None,
) -> Outcome:
    """Release or reject a held payment, in the caller's transaction."""
    move = ledger.release if action == "release" else ledger.reject
    row = await move(conn, payment_id, operator, note, client=client)
    return Outcome(await payment(conn, payment_id), row is not None)


async def refresh_gauge(conn: db.Connection) -> int:
    """Set the held-payments gauges from the table; returns how many are held."""
    total = 0
    for r in await conn.fetch(db.q("holds_gauge")):
        metrics.PAYMENTS_HELD.labels(r["chain"]).set(r["held"])
        metrics.PAYMENTS_HELD_OLDEST.labels(r["chain"]).set(r["oldest_seconds"])
        total += r["held"]
    return total
