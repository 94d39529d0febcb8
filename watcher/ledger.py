"""The one credit path: every transition of a payment is a function of this module.

Every function takes a connection that is already inside the caller's
transaction: one converge step (or one API request) = one transaction, so a
transition and whatever hangs on it commit together or not at all.
Idempotency comes from ``ON CONFLICT`` and from state guards in the SQL
(``WHERE state = 'observed'``), so replaying a step, a second watcher, or a
crash between steps can never credit twice. Nothing else writes
``payments.state`` (``tests/unit/test_one_credit_path.py`` checks every query,
every SQL string in Python and every database function); docs/ledger.md says
why each transition exists.

    transition        from -> to                                   function
    record            new / orphaned / moved -> observed,          record
                      below_minimum, not_ours
    record credited   new / observed / orphaned -> credited (EVM,  record_credited
                      already deep; then as credit)
    credit            observed -> credited; credited -> claimed    credit
                      when it is a served x402 settlement's
    hold              observed -> held when a screening rule       credit (and
                      fires (watcher.screening.core)               record_credited,
                                                                   admin_settle)
    release (admin)   held -> credited (then as credit)            release
    reject (admin)    held -> rejected (refundable, never          reject
                      claimable)
    orphan            observed / below_minimum / held -> orphaned; orphan
                      its served x402 settlement -> reorged
    flag / unflag     credited, claimed, rejected:                 flag_reorged_credits,
                      reorged_after_credit
                      set / cleared (tokens suspended / served)    clear_reorg_flags
    claim             credited -> claimed (one access token)       claim
    claim served      credited -> claimed (x402 call served)       claim_served
    settle (admin)    observed, orphaned, below_minimum,           admin_settle
                      not_ours -> credited (then as credit), or
                      held when a screening rule fires
    invalidate        observed, credited, claimed -> not_ours      admin_invalidate
    (admin)           (its token emptied)
    expire            invoices: open -> expired after the grace    expire_invoices
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import asyncpg

from watcher import db, events, invoice_paid, ledger_screen, metrics, money
from watcher.screening import core

RecordState = Literal["observed", "below_minimum", "not_ours"]
# The two kinds of x402 settlement that can consume a payment when the call is served.
X402Rail = Literal["x402_authorizations", "x402_solana_settlements"]

# A payment that arrives this long after its invoice expired still pays it
# (the same window cleanup_expired_x402_payments() waits before expiring).
INVOICE_GRACE = timedelta(hours=1)
# An EVM invoice's amount stays held this long after the invoice expires, so a late
# (or second) payment for it can never pay another invoice; a payment that could be
# meant for two invoices within this window matches neither (docs/api.md).
INVOICE_AMOUNT_HOLD = timedelta(hours=24)
# What a token whose payment left the canonical chain says when refused (402).
SUSPENDED_REORGED = "payment_reorged"

# Every named query that writes payments.state or payments.reorged_after_credit (or
# inserts a payment). Only this module runs them; tests/unit/test_one_credit_path.py
# fails when another query does, or another module names one of these.
STATE_QUERIES = frozenset(
    {
        "record_transfers",
        "record_credited_transfers",
        "credit_payments",
        "link_x402_credits",
        "orphan_payments",
        "flag_reorged_credits",
        "clear_reorg_flags",
        "api_claim_payment",
        "x402_claim_payment",
        "x402_svm_claim_payment",
        "api_admin_settle",
        "api_admin_invalidate",
        # holds (issue 16)
        "hold_payments",
        "api_admin_hold",
        "release_payment",
        "reject_payment",
    }
)
# The states screening reads a payment in before it is credited (ledger_screen_facts).
_CREDITABLE = ["observed"]
_SETTLEABLE = ["observed", "orphaned", "below_minimum", "not_ours"]
_SERVED_QUERY: dict[X402Rail, str] = {
    "x402_authorizations": "x402_claim_payment",
    "x402_solana_settlements": "x402_svm_claim_payment",
}


@dataclass(frozen=True, slots=True)
class Transfer:
    """A USDC transfer toward us, as a follower saw it on chain."""

    chain: str
    tx_hash: str  # EVM: lowercase 0x + 64 hex; Solana: base58 signature
    log_index: int  # EVM log index; Solana account index
    block_number: int  # Solana: slot
    block_hash: str | None
    token: str
    to_address: str
    amount: int  # base units, > 0
    from_address: str | None = None
    block_time: datetime | None = None
    token_account: str | None = None
    memo: str | None = None
    reference_keys: tuple[str, ...] = ()
    state: RecordState = "observed"
    reason: str | None = None
    # The transfer's identity within its transaction, which survives a reorg that
    # re-includes the transaction elsewhere (migration 0010). EVM: see
    # ``evm_scan.to_transfers``; None means the position (Solana's account index).
    transfer_key: str | None = None
    # Screening (issue 16). Who sent the transaction: EVM its ``from`` (a transfer
    # routed through a contract has a ``from_address`` that is the contract); Solana
    # the fee payer (``from_address`` is the source owner). None: not learned (the
    # followers learn it only when the screen needs addresses).
    tx_sender: str | None = None
    # The sanctions oracle's answers for this transfer's addresses, asked before the
    # transaction that records it (watcher/screening/prefetch.py); None: not asked.
    oracle_answers: Mapping[str, bool | None] | None = None

    def key(self) -> str:
        return self.transfer_key if self.transfer_key is not None else str(self.log_index)


def judge(amount: int, minimum: int) -> tuple[RecordState, str | None]:
    """The state a transfer of ``amount`` base units (ours, > 0) is recorded in, and why.

    The one rule both followers apply: below ``minimum`` it is recorded
    ``below_minimum`` (shown by ``explain``, never credited), else ``observed``.
    """
    if amount < minimum:
        return "below_minimum", (
            f"{money.usd(amount)} USDC is below the minimum payment of {money.usd(minimum)} USDC"
        )
    return "observed", None


# ---- followers: record, credit, orphan, flag -------------------------------------------


async def record(conn: db.Connection, transfers: Sequence[Transfer]) -> list[asyncpg.Record]:
    """Record transfers seen on chain; returns the rows inserted or revived.

    Transition: (new), orphaned, or observed / below_minimum at another block ->
    the transfer's own state (observed, below_minimum or not_ours); a credited or
    claimed row seen at another place keeps its state and is flagged until that
    place is confirmed. Runs in the caller's transaction.
    """
    if not transfers:
        return []
    cols = list(
        zip(
            *(
                (
                    t.chain,
                    t.tx_hash,
                    t.log_index,
                    t.block_number,
                    t.block_hash,
                    t.block_time,
                    t.token,
                    t.from_address,
                    t.to_address,
                    t.token_account,
                    t.amount,
                    t.state,
                    t.reason,
                    t.memo,
                    ",".join(t.reference_keys),
                    t.key(),
                    t.tx_sender,
                    ledger_screen.answers_text(t.oracle_answers),
                )
                for t in transfers
            ),
            strict=True,
        )
    )
    rows = await conn.fetch(db.q("record_transfers"), *[list(c) for c in cols])
    # One metric update per label set, not per row: a backfill records 1e5 rows.
    for (chain, state), n in Counter((r["chain"], r["state"]) for r in rows).items():
        metrics.PAYMENTS.labels(chain, state).inc(n)
    await events.payments(
        conn, "payment.observed", [r["id"] for r in rows if r["state"] == "observed"]
    )
    await invoice_paid.announce(conn, rows, grace=INVOICE_GRACE, hold=INVOICE_AMOUNT_HOLD)
    return rows


async def record_credited(
    conn: db.Connection, transfers: Sequence[Transfer]
) -> list[asyncpg.Record]:
    """Record transfers already confirmed in blocks the caller just verified, as credited.

    Transition: (new), observed or orphaned -> credited, then as :func:`credit`
    (a served x402 settlement's transfer -> claimed; invoices linked). A credited
    or claimed row seen at another place keeps its state and is flagged, as in
    :func:`record`. Spares a large EVM backfill writing each row twice. Returns
    the rows credited here for the first time. Runs in the caller's transaction.

    Screened first, as :func:`credit` (first seen: now). A transfer a rule fires
    for is recorded observed and then credited from its row, which holds it.
    """
    if not transfers:
        return []
    now = datetime.now(UTC)
    screen = core.current()
    outcome = ledger_screen.judge_all(screen, [_item(t, now) for t in transfers])
    rows: list[asyncpg.Record] = []
    for risk, idx in outcome.passed.items():
        ts = [transfers[i] for i in idx]
        rows += await conn.fetch(
            db.q("record_credited_transfers"),
            [t.chain for t in ts],
            [t.token for t in ts],
            [t.tx_hash for t in ts],
            [t.log_index for t in ts],
            [t.block_number for t in ts],
            [t.block_hash for t in ts],
            [t.block_time for t in ts],
            [t.from_address for t in ts],
            [t.to_address for t in ts],
            [t.amount for t in ts],
            [t.key() for t in ts],
            [t.tx_sender for t in ts],
            [ledger_screen.answers_text(t.oracle_answers) for t in ts],
            risk,
        )
    await _credited(conn, rows)
    if outcome.held:
        late = [transfers[i] for i, _ in outcome.held]
        await record(conn, late)
        found = await conn.fetch(
            db.q("ledger_payment_ids"),
            [t.chain for t in late],
            [t.tx_hash for t in late],
            [t.key() for t in late],
        )
        rows += await credit(conn, [r["id"] for r in found])
    return rows


def _item(t: Transfer, now: datetime) -> ledger_screen.Item:
    # First seen: now. A row seen earlier is younger: its verdict can only pass more.
    return ledger_screen.Item(
        t.chain, t.amount, t.block_time, now, t.from_address, t.tx_sender, t.oracle_answers
    )


async def credit(conn: db.Connection, ids: Sequence[int]) -> list[asyncpg.Record]:
    """Credit confirmed payments; returns the rows credited.

    Transition: observed -> credited (rows already credited, orphaned or anything
    else are left alone), once the process's screen (``screening.core.current()``)
    passes it; observed -> held when a rule fires (reason and risk stored, then
    ``payment.held``). In the same step a credited payment that is the transfer of
    an x402 settlement whose call was served becomes claimed, and the invoice a
    payment pays is marked credited. Runs in the caller's transaction.
    """
    if not ids:
        return []
    screen = core.current()
    facts = await conn.fetch(db.q("ledger_screen_facts"), list(ids), _CREDITABLE)
    outcome = ledger_screen.judge_all(screen, [ledger_screen.row_item(r) for r in facts])
    rows: list[asyncpg.Record] = []
    for risk, idx in outcome.passed.items():
        rows += await conn.fetch(db.q("credit_payments"), [facts[i]["id"] for i in idx], risk)
    await _credited(conn, rows)
    if outcome.held:
        await _hold(conn, [(facts[i]["id"], v) for i, v in outcome.held])
    return rows


async def _hold(conn: db.Connection, verdicts: Sequence[tuple[int, core.Verdict]]) -> None:
    """observed -> held, with each one's reason and risk; counted, and ``payment.held``."""
    held = await conn.fetch(
        db.q("hold_payments"),
        [i for i, _ in verdicts],
        [v.reason for _, v in verdicts],
        [ledger_screen.dumps(v) for _, v in verdicts],
    )
    for chain, n in Counter(r["chain"] for r in held).items():
        metrics.PAYMENTS.labels(chain, "held").inc(n)
    await events.payments(conn, "payment.held", [r["id"] for r in held])


async def _credited(conn: db.Connection, rows: Sequence[asyncpg.Record]) -> None:
    """What follows every credit, whoever credits (follower, backfill, operator)."""
    count: Counter[str] = Counter()
    units: Counter[str] = Counter()
    for r in rows:
        count[r["chain"]] += 1
        units[r["chain"]] += int(r["amount"])
    for chain, n in count.items():
        metrics.PAYMENTS.labels(chain, "credited").inc(n)
        metrics.CREDITED_BASE_UNITS.labels(chain).inc(units[chain])
    await _follow_credit(conn, [r["id"] for r in rows])


async def _follow_credit(conn: db.Connection, ids: Iterable[int]) -> None:
    """What follows every credit: x402 links, invoices, and the events, in that order."""
    ids = list(ids)
    if not ids:
        return
    # x402 first: a payment consumed by a served call (now claimed) pays no invoice.
    served = await conn.fetch(db.q("link_x402_credits"), ids)
    linked = await conn.fetch(db.q("link_invoices"), ids, INVOICE_GRACE, INVOICE_AMOUNT_HOLD)
    # Events after the links, so each carries the payment (and invoice) as it now is.
    await events.payments(conn, "payment.credited", ids)
    await events.payments(conn, "payment.claimed", [r["id"] for r in served])
    await events.invoices(conn, "invoice.credited", [r["invoice_id"] for r in linked])
    # events (issue 14, emitters): a reorged settlement credited again is settled again.
    relanded = [r for r in served if r["relanded"]]
    await events.x402_settlement_rows(conn, "x402_settlement.settled", relanded)


async def orphan(conn: db.Connection, ids: Sequence[int], reason: str) -> list[asyncpg.Record]:
    """Orphan payments whose block left the canonical chain (or never finalized).

    Transition: observed / below_minimum -> orphaned, with the reason ``watcher
    explain`` shows; a served x402 settlement of the same transaction becomes
    ``reorged`` (never counted as paid). Runs in the caller's transaction.
    """
    if not ids:
        return []
    rows = await conn.fetch(db.q("orphan_payments"), list(ids), reason)
    for r in rows:
        metrics.PAYMENTS.labels(r["chain"], "orphaned").inc()
    if rows:
        x402 = await conn.fetch(db.q("mark_x402_orphaned"), [r["id"] for r in rows])
        await events.payments(conn, "payment.orphaned", [r["id"] for r in rows])
        # events (issue 14, emitters): the settlements moved to reorged with the payment.
        await events.x402_settlement_rows(conn, "x402_settlement.reorged", x402)
    return rows


async def flag_reorged_credits(
    conn: db.Connection, ids: Sequence[int], reason: str
) -> list[asyncpg.Record]:
    """Flag credited payments whose block was reorged out: counted, never deleted.

    Transition: credited / claimed (not flagged, or flagged and re-landed since)
    -> reorged_after_credit. Until the transfer re-lands and is confirmed again
    the payment cannot be claimed and the token it bought (if any) is suspended.
    Runs in the caller's transaction.
    """
    if not ids:
        return []
    rows = await conn.fetch(db.q("flag_reorged_credits"), list(ids), reason, SUSPENDED_REORGED)
    for r in rows:
        metrics.CREDITED_REORGED.labels(r["chain"]).inc()
    await events.payments(conn, "payment.reorged", [r["id"] for r in rows])
    # events (issue 14, emitters): the EVM settlements the flag's trigger moved to reorged.
    moved = [i for r in rows for i in (r["x402_reorged"] or ())]
    await events.x402_settlements(conn, "x402_settlement.reorged", "evm", moved)
    return rows


async def clear_reorg_flags(conn: db.Connection, ids: Sequence[int]) -> list[asyncpg.Record]:
    """Flagged payments confirmed again at their new place: claimable, tokens served again.

    Transition: credited / claimed, flagged and re-landed -> not flagged. Runs in
    the caller's transaction.
    """
    if not ids:
        return []
    rows = await conn.fetch(db.q("clear_reorg_flags"), list(ids))
    for r in rows:
        metrics.CREDITED_RELANDED.labels(r["chain"]).inc()
    await events.payments(conn, "payment.relanded", [r["id"] for r in rows])
    # events (issue 14, emitters): the EVM settlements the trigger moved back to settled.
    moved = [i for r in rows for i in (r["x402_relanded"] or ())]
    await events.x402_settlements(conn, "x402_settlement.settled", "evm", moved)
    return rows


# ---- the API: claims, x402 settlements, operators, housekeeping ------------------------


async def claim(
    conn: db.Connection,
    token_hash: bytes,
    payment_id: int,
    *,
    price: int,
    lifetime: timedelta,
    max_requests: int,
) -> asyncpg.Record | None:
    """Issue the one access token a credited payment buys, in one statement.

    Transition: credited (not flagged, at least ``price``) -> claimed, its invoice
    credited -> claimed, and the token inserted. None: nothing was issued (the
    caller asks ``api_claim_refusal`` why). Runs in the caller's transaction (or
    as its own statement on a connection outside one).
    """
    # The age rule's second half (issue 16): an old payment is refunded, not claimed.
    cutoff = core.current().claim_cutoff(datetime.now(UTC))
    row = await conn.fetchrow(
        db.q("api_claim_payment"), token_hash, payment_id, price, lifetime, max_requests, cutoff
    )
    if row is not None:
        metrics.TOKENS_ISSUED.labels(row["chain"]).inc()
        metrics.PAYMENTS.labels(row["chain"], "claimed").inc()
        await events.payments(conn, "payment.claimed", [payment_id])
        await events.tokens(conn, "token.issued", [row["id"]])
        if row["invoice_id"] is not None:
            await events.invoices(conn, "invoice.claimed", [row["invoice_id"]])
    return row


async def claim_served(conn: db.Connection, rail: X402Rail, row_id: int, payment_id: int) -> bool:
    """Consume the payment of an x402 settlement whose call was served; False if not credited.

    Transition: credited -> claimed (the call was the purchase), and the
    settlement row ``row_id`` of ``rail`` linked to the payment. Runs in the
    caller's transaction, which holds the settlement row's lock.
    """
    served = bool(await conn.fetchval(db.q(_SERVED_QUERY[rail]), row_id, payment_id))
    if served:
        await events.payments(conn, "payment.claimed", [payment_id])
    return served


async def admin_settle(conn: db.Connection, payment_id: int, reason: str) -> asyncpg.Record | None:
    """An operator credits a payment the followers could not; None if its state forbids it.

    Transition: observed, orphaned, below_minimum or not_ours -> credited, then
    as :func:`credit` (x402 settlement, invoice); -> held instead when a screening
    rule fires (the row's ``state`` says which). Never a held or rejected payment.
    Runs in the caller's transaction (which writes the audit row).
    """
    screen = core.current()
    facts = await conn.fetchrow(db.q("ledger_screen_facts"), [payment_id], _SETTLEABLE)
    if facts is None:
        return None
    verdict = screen.judge(ledger_screen.item_facts(ledger_screen.row_item(facts), screen))
    if verdict.hold:
        row = await conn.fetchrow(
            db.q("api_admin_hold"), payment_id, verdict.reason, ledger_screen.dumps(verdict)
        )
        if row is not None:
            metrics.PAYMENTS.labels(row["chain"], "held").inc()
            await events.payments(conn, "payment.held", [payment_id])
        return row
    row = await conn.fetchrow(
        db.q("api_admin_settle"), payment_id, reason, ledger_screen.dumps(verdict)
    )
    if row is not None:
        metrics.PAYMENTS.labels(row["chain"], "credited").inc()
        await _follow_credit(conn, [payment_id])  # writes payment.credited
    return row


async def release(
    conn: db.Connection, payment_id: int, operator: str, note: str, *, client: str | None = None
) -> asyncpg.Record | None:
    """An operator reviewed a held payment and lets it through; None if it is not held.

    Transition: held -> credited (``reviewed_by`` = ``operator``, ``review_note``),
    ``payment.released``, then exactly what follows every credit (x402 links,
    invoices, ``payment.credited``), and an ``admin_audit`` row naming the operator.
    Runs in the caller's transaction.
    """
    row = await conn.fetchrow(db.q("release_payment"), payment_id, operator, note)
    if row is None:
        return None
    metrics.HOLDS_REVIEWED.labels(row["chain"], "released").inc()
    metrics.PAYMENTS.labels(row["chain"], "credited").inc()
    metrics.CREDITED_BASE_UNITS.labels(row["chain"]).inc(int(row["amount"]))
    await conn.execute(
        db.q("ledger_review_audit"),
        "payment.release",
        payment_id,
        "held",
        "credited",
        note,
        client,
        operator,
    )
    await events.payments(conn, "payment.released", [payment_id])
    await _follow_credit(conn, [payment_id])
    return row


async def reject(
    conn: db.Connection, payment_id: int, operator: str, note: str, *, client: str | None = None
) -> asyncpg.Record | None:
    """An operator reviewed a held payment and refuses it; None if it is not held.

    Transition: held -> rejected (never claimable; refundable), ``payment.rejected``
    and an ``admin_audit`` row naming the operator. Runs in the caller's transaction.
    """
    row = await conn.fetchrow(db.q("reject_payment"), payment_id, operator, note)
    if row is None:
        return None
    metrics.HOLDS_REVIEWED.labels(row["chain"], "rejected").inc()
    metrics.PAYMENTS.labels(row["chain"], "rejected").inc()
    await conn.execute(
        db.q("ledger_review_audit"),
        "payment.reject",
        payment_id,
        "held",
        "rejected",
        note,
        client,
        operator,
    )
    await events.payments(conn, "payment.rejected", [payment_id])
    return row


async def admin_invalidate(
    conn: db.Connection, payment_id: int, reason: str
) -> asyncpg.Record | None:
    """An operator rules that a payment buys nothing; None if its state forbids it.

    Transition: observed, credited or claimed -> not_ours (never revived or
    credited by a follower); a token it bought is emptied. Runs in the caller's
    transaction (which writes the audit row).
    """
    row = await conn.fetchrow(db.q("api_admin_invalidate"), payment_id, reason)
    if row is not None:
        metrics.PAYMENTS.labels(row["chain"], "not_ours").inc()
        await events.payments(conn, "payment.invalidated", [payment_id])
    return row


async def expire_invoices(conn: db.Connection) -> int:
    """Expire open invoices whose validity and the late-payment grace have passed.

    Transition: invoices open -> expired (``cleanup_expired_x402_payments``);
    payments and tokens are never touched. Runs in the caller's transaction (or
    as its own statement). Returns how many expired.
    """
    ids = [r["id"] for r in await conn.fetch(db.q("api_expire_invoices"), INVOICE_GRACE)]
    await events.invoices(conn, "invoice.expired", ids)
    return len(ids)


# ---- cursors ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cursor:
    num: int
    hash: str | None
    head: int | None


async def get_cursor(conn: db.Connection, chain: str, stream: str = "logs") -> Cursor | None:
    row = await conn.fetchrow(db.q("get_cursor"), chain, stream)
    return None if row is None else Cursor(row["num"], row["hash"], row["head"])


async def set_cursor(
    conn: db.Connection,
    chain: str,
    num: int,
    hash_: str | None,
    *,
    stream: str = "logs",
    head: int | None = None,
) -> None:
    await conn.execute(db.q("set_cursor"), chain, stream, num, hash_, head)
