"""The ledger's side of ``watcher explain``: what the follower recorded for each transfer.

The ledger is where ``watcher run`` keeps it: ``DATABASE_URL``, else the embedded
PostgreSQL under ``WATCHER_DATA_DIR``, joined when it runs and started (then
stopped again) when it does not. Explain only reads: it never creates a database
where there is none, and says so instead.
"""

from __future__ import annotations

import asyncio
import json
import subprocess

import asyncpg

from watcher import db, events, money
from watcher.explain import model
from watcher.settings import Settings


async def read_ledger(report: model.Report, settings: Settings) -> None:
    """Annotate ``report`` from the ledger ``watcher run`` writes, or note why not."""
    if settings.database_url is not None:
        dsn = settings.database_url.get_secret_value()
        await annotate(report, dsn, cursor_stream=report.cursor_stream)
        return
    where = f"WATCHER_DATA_DIR={settings.watcher_data_dir}"
    embedded = db.EmbeddedPostgres(settings.watcher_data_dir)
    # PG_VERSION is written by initdb: without it, starting the server would create an
    # empty database, which would tell the operator nothing was ever recorded.
    try:
        (embedded.pgdata / "PG_VERSION").stat()
    except (FileNotFoundError, NotADirectoryError):
        report.notes.append(
            f"no ledger at {where} and DATABASE_URL is unset: no ledger state shown "
            "(set DATABASE_URL, or WATCHER_DATA_DIR to where watcher run keeps its data)"
        )
        return
    except OSError as exc:  # e.g. another user's data dir
        report.notes.append(f"cannot read {where} ({exc.strerror}): no ledger state shown")
        return
    try:
        dsn = await asyncio.to_thread(embedded.start)
    except PermissionError as exc:  # another user's data dir (watcher/db.py): never taken
        report.notes.append(f"{exc}: no ledger state shown")
        return
    except (OSError, subprocess.SubprocessError, AssertionError) as exc:
        # pgserver raises what pg_ctl raised, and asserts the server came up.
        report.notes.append(
            f"the embedded database at {where} did not start ({type(exc).__name__}): "
            "no ledger state shown"
        )
        return
    try:
        await annotate(report, dsn, cursor_stream=report.cursor_stream)
    finally:
        await asyncio.to_thread(embedded.stop)


async def annotate(report: model.Report, dsn: str, *, cursor_stream: str | None = None) -> None:
    """Add each transfer's ledger ``state`` and ``reason``; a note when the DB is unreachable.

    ``cursor_stream`` names the follower's cursor whose head gives confirmations
    (EVM: ``logs``); transfers that already have a count (from the node) keep it.
    """
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        report.notes.append(f"database unreachable ({type(exc).__name__}): no ledger state shown")
        return
    try:
        await _annotate(report, conn, cursor_stream)
    except asyncpg.UndefinedTableError as exc:  # never migrated, or older than this code
        report.notes.append(f"the database lacks the ledger's tables ({exc}): run watcher migrate")
    finally:
        await conn.close()


async def _annotate(report: model.Report, conn: db.Connection, cursor_stream: str | None) -> None:
    """Each transfer's state, reason and events; confirmations from the cursor's head."""
    head = None
    if cursor_stream is not None:
        cur = await conn.fetchrow(db.q("get_cursor"), report.chain, cursor_stream)
        head = cur["head"] if cur is not None else None
    for tx in report.transactions:
        rows = {
            r["log_index"]: r for r in await conn.fetch(db.q("payments_by_tx"), report.chain, tx.tx)
        }
        for t in tx.transfers:
            row = rows.get(t.index)
            await _refunds(conn, report.chain, tx.tx, t, row)
            t.state = "not_recorded" if row is None else _state(row)
            if row is not None and row["reason"]:
                t.reason = row["reason"]
            if row is not None:
                t.events = [_event(e) for e in await conn.fetch(db.q("explain_events"), row["id"])]
                _holds(t, row)
            if head is not None and t.block is not None and t.confirmations is None:
                t.confirmations = max(0, head - t.block + 1)


async def _refunds(
    conn: db.Connection, chain: str, tx: str, t: model.Transfer, row: asyncpg.Record | None
) -> None:
    """The refunds of this payment, or the refund this outgoing transfer is (issue 16)."""
    found = await conn.fetch(db.q("explain_refunds"), chain, row["id"] if row else None, tx)
    lines = []
    for r in found:
        ours = r["payment_id"] == (row["id"] if row else None)
        if not ours and (t.to_address or "").lower() != r["destination"].lower():
            continue  # another transfer of this transaction
        where = f" in tx {r['tx_hash']}" if r["tx_hash"] else ""
        if r["out_block_number"] is not None:
            where += f" (block {r['out_block_number']})"
        what = (
            f"refund {r['id']} ({r['refund_key']}) of {money.usd(r['amount'])} USDC to "
            f"{r['destination']}: {r['status']}{where}, asked by {r['requested_by']}"
        )
        if r["failure"]:
            what += f"; failed: {r['failure']}"
        if not ours:
            what = f"our {what}, for the payment in tx {r['payment_tx_hash']}"
        lines.append(what)
    t.refunds = lines or None


def _holds(t: model.Transfer, row: asyncpg.Record) -> None:
    """The screening's side (issue 16): the tx sender, the risk and the review."""
    t.tx_sender = row["tx_sender"]
    if row["risk"] is not None:
        t.risk = json.loads(row["risk"])
    if row["reviewed_by"] is not None:
        t.review = {
            "by": row["reviewed_by"],
            "at": row["reviewed_at"].isoformat(),
            "note": row["review_note"],
        }


def _event(row: asyncpg.Record) -> str:
    """``payment.credited (evt_12; webhooks: 1 delivered, 2 pending)``."""
    counts = [f"{row[k]} {k}" for k in ("delivered", "pending", "failed", "cancelled") if row[k]]
    hooks = f"; webhooks: {', '.join(counts)}" if counts else ""
    return f"{row['type']} ({events.public_id(row['id'])}{hooks})"


def _state(row: asyncpg.Record) -> str:
    state: str = row["state"]
    if row["reorged_after_credit"]:
        # Off the canonical chain since it was credited: buys nothing for now.
        state += (
            " (reorged after credit: re-included, suspended until confirmed)"
            if row["relanded_at"] is not None
            else " (reorged after credit: not claimable, its token suspended)"
        )
    return state
