"""The Solana follower: credit finalized SPL USDC payments to our receiving wallet.

What counts is decided by :mod:`watcher.chains.solana_tx` (balance deltas of
our USDC token accounts in successful transactions). This module finds those
transactions and moves them through the ledger:

* **Watched accounts**: the owner's associated token account for the USDC
  mint (derived, so payments that create it are seen), the accounts listed in
  ``X402_SOLANA_TOKEN_ACCOUNTS``, and every account that already has credited
  payments (so money that arrived elsewhere before is not dropped). Never
  every account ``getTokenAccountsByOwner`` reports: anyone can create token
  accounts owned by us, and the cost of a pass must not grow with them
  (``watcher doctor`` lists the ones ignored). Accounts sync concurrently,
  ``ACCOUNT_CONCURRENCY`` at a time. The refund wallet's USDC account is followed
  too, for our outgoing refunds only (:mod:`solana_outgoing`).
* **Ownership** (:mod:`solana_owners`): a balance counts only if the account
  was ours when it moved; the owner after each account's cursor is kept in
  ``solana_account_owners`` for answers whose balances do not name it.
* **Discovery** (:mod:`solana_history`): ``getSignaturesForAddress`` per
  account at ``confirmed``, newest first, paginated with ``before`` down to
  ``until`` = the cursor, checked to join the cursor without a gap. The
  cursor (``cursors`` row, stream = token account) is the newest *finalized*
  signature processed and its slot; it never points at a signature that could
  still be dropped.
* **States**: a payment is ``observed`` when seen at ``confirmed`` and
  ``credited`` only when its transaction is read again at ``finalized`` and
  still pays the same amount to the same account. An observed payment whose
  slot is at or below the finalized slot while its signature is unknown (the
  fork was dropped) is ``orphaned`` with the reason; if it lands again later it
  is revived and credited normally.
* **Steps**: RPC calls first, then one short DB transaction per batch (records,
  credits and the cursor commit together: :mod:`solana_commit`). No DB
  connection is held across an RPC await. Every write is idempotent, so a
  crash or a second watcher at any point never credits twice.
* **Wakeups**: websocket ``logsSubscribe`` hints (:mod:`solana_ws`) cut the
  wait; polling every ``poll_interval`` seconds is the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog

from watcher import chain_settings, db, errors, ledger, metrics, progress, rpc
from watcher.chains import (
    follower,
    solana_accounts,
    solana_commit,
    solana_history,
    solana_outgoing,
    solana_tx,
    solana_ws,
)
from watcher.settings import Settings, SolanaChain

log = structlog.get_logger(__name__)

# Solana error codes meaning "this endpoint cannot answer right now": try the next one.
ROTATE_CODES = (-32004, -32005, -32014, -32016)
# A step that loses a race with another watcher is rolled back and simply retried.
# A pass that fails on these rolled back whole: retry it, do not crash.
RETRIED: tuple[type[BaseException], ...] = (
    errors.RpcError,
    solana_tx.MalformedTransaction,
    *db.TRANSIENT_ERRORS,
)
PENDING_CACHE = 10_000  # confirmed-only transactions kept in memory between passes
TX_CONFIG = {"encoding": "jsonParsed", "maxSupportedTransactionVersion": 0}
ACCOUNT_CONCURRENCY = 4  # watched accounts synced at once (each: listing, then its batches)


associated_token_account = solana_accounts.associated_token_account  # scripts/pay.py uses it


class SolanaFollower:
    """Follows the USDC token accounts of one owner."""

    def __init__(
        self,
        chain: SolanaChain,
        pool: db.Pool,
        client: rpc.RpcPool,
        *,
        min_units: int,
        poll_interval: float = 2.0,
        accounts_refresh: float = 60.0,
        page_limit: int = 1000,
        batch_size: int = 50,
        max_pages: int = 10_000,
        refund_wallet: str | None = None,
    ) -> None:
        if not chain.owner:
            var = chain_settings.prefix(chain.network).upper() + "PAYMENT_ADDRESS"
            raise errors.ConfigError([f"{var}: not set"])
        self.chain = chain
        self.owner: str = chain.owner
        self.mint = chain.usdc_mint
        self.pool = pool
        self.rpc = client
        self.min_units = min_units
        self.poll_interval = poll_interval
        self.accounts_refresh = accounts_refresh
        self.page_limit = page_limit
        self.batch_size = batch_size
        self.max_pages = max_pages
        self.credit_at = chain.commitment  # "finalized" unless the operator chose otherwise
        self.ata = solana_accounts.associated_token_account(self.owner, self.mint)
        self.listed = tuple(a for a in chain.token_accounts if a != self.ata)
        # The refund wallet's USDC account: followed for what leaves it (solana_outgoing).
        self.refund = solana_outgoing.refund_wallet(refund_wallet, self.mint)
        self._receiving = {self.ata, *self.listed}
        self.accounts: list[str] = solana_outgoing.followed([self.ata, *self.listed], self.refund)
        self._accounts_at = -1e9
        self._wake = asyncio.Event()
        self._accounts_changed = asyncio.Event()
        self._final_seen: dict[str, float] = {}  # signature -> when first seen finalized
        self._pending: dict[str, solana_tx.TxView] = {}  # read at confirmed, not final yet

    # ---- accounts ---------------------------------------------------------------------

    async def refresh_accounts(self) -> list[str]:
        """The watched set: ATA + operator-listed + accounts with credited history.

        Never what ``getTokenAccountsByOwner`` returns: anyone can open token accounts
        in our name, and following each would cost us a round trip per pass. One
        ``getMultipleAccounts`` says which watched accounts are not (or no longer) our
        USDC accounts today; they stay followed (their history is judged per transaction).
        """
        found = await solana_accounts.watched(self.pool, self.chain.name, self.ata, self.listed)
        await solana_accounts.check_today(self.rpc, found, self.owner, self.mint)
        self._receiving = set(found)
        found = solana_outgoing.followed(found, self.refund)
        if found != self.accounts:
            log.info("solana_accounts", accounts=found)
            self.accounts = found
            self._accounts_changed.set()
        self._accounts_at = time.monotonic()
        return found

    # ---- one pass -------------------------------------------------------------------

    async def sync_once(self) -> solana_commit.PassStats:
        """One pass: discovery on every watched account (concurrently, bounded), then orphans."""
        stats = solana_commit.PassStats()
        if time.monotonic() - self._accounts_at >= self.accounts_refresh:
            await self.refresh_accounts()
        head = int(await self.rpc.request("getSlot", [{"commitment": "confirmed"}]))
        metrics.HEAD_BLOCK.labels(self.chain.name).set(head)
        metrics.LAST_BLOCK_TIMESTAMP.labels(self.chain.name).set(time.time())
        bound = asyncio.Semaphore(ACCOUNT_CONCURRENCY)

        async def one(account: str) -> None:
            async with bound:
                await self._sync_account(account, head, stats)

        await solana_ws.gather_or_cancel([one(a) for a in self.accounts])
        await self._settle(stats)
        return stats

    def _is_final(self, entry: dict[str, Any]) -> bool:
        status = entry.get("confirmationStatus")
        return status == "finalized" or (self.credit_at == "confirmed" and status == "confirmed")

    async def _sync_account(self, account: str, head: int, stats: solana_commit.PassStats) -> None:
        async with self.pool.acquire() as conn:
            cursor = await ledger.get_cursor(conn, self.chain.name, stream=account)
            known = await conn.fetchrow(db.q("solana_get_account_owner"), account, self.chain.name)
        until = cursor.hash if cursor else None
        # Who owned the account after the cursor's transaction, as its history said.
        owner = str(known["owner"]) if known is not None and known["owner"] else None
        listed = await solana_history.new_signatures(
            self.rpc, account, until, page_limit=self.page_limit, max_pages=self.max_pages
        )
        entries = list(reversed(listed))
        stats.signatures += len(entries)
        advancing = True  # the cursor moves only over a contiguous finalized prefix
        for start in range(0, len(entries), self.batch_size):
            batch = entries[start : start + self.batch_size]
            finals = [self._is_final(e) for e in batch]
            for entry, final in zip(batch, finals, strict=True):
                if final:
                    self._final_seen.setdefault(entry["signature"], time.monotonic())
            # Failed transactions (err in the listing) are never payments: no need to fetch.
            txs = await solana_ws.gather_or_cancel(
                [
                    self._fetch(e, f) if e.get("err") is None else solana_ws.nothing()
                    for e, f in zip(batch, finals, strict=True)
                ]
            )
            for e, tx, f in zip(batch, txs, finals, strict=True):
                if f:
                    self._pending.pop(e["signature"], None)
                elif tx is not None and len(self._pending) < PENDING_CACHE:
                    self._pending[e["signature"]] = tx
            views: list[solana_commit.View] = []
            mn = self.min_units
            for e, tx, f in zip(batch, txs, finals, strict=True):
                # not readable at that commitment yet: not final, retried next pass
                final = f and (tx is not None or e.get("err") is not None)
                found, owner = (
                    solana_accounts.transfers(
                        self.chain.name, tx, account, owner, self.owner, self.mint, mn
                    )
                    if tx
                    else ([], owner)
                )
                out = solana_outgoing.transfers(self.chain.name, tx, account, self.refund)
                if account not in self._receiving:
                    found = []  # the refund wallet's own account: nothing into it is a payment
                views.append(solana_commit.View(e, final, found, owner, out))
            advancing = await solana_commit.commit(
                self.pool, self.chain.name, account, views, head, advancing, stats, self._final_seen
            )

    async def _fetch(self, entry: dict[str, Any], final: bool) -> solana_tx.TxView | None:
        if not final and entry["signature"] in self._pending:
            return self._pending[entry["signature"]]  # read at confirmed already: no refetch
        commitment = "finalized" if final and self.credit_at == "finalized" else "confirmed"
        answer = await self.rpc.request(
            "getTransaction", [entry["signature"], {**TX_CONFIG, "commitment": commitment}]
        )
        if answer is None:
            return None
        return solana_tx.view(answer)

    async def _settle(self, stats: solana_commit.PassStats, limit: int = 256) -> None:
        """Orphan observed payments whose slot is finalized but whose signature is gone."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(db.q("solana_observed"), limit, self.chain.name)
        if not rows:
            return
        finalized = int(await self.rpc.request("getSlot", [{"commitment": "finalized"}]))
        due = [r for r in rows if int(r["block_number"]) <= finalized]
        if not due:
            return
        sigs = sorted({str(r["tx_hash"]) for r in due})
        res = await self.rpc.request(
            "getSignatureStatuses", [sigs, {"searchTransactionHistory": True}]
        )
        statuses = dict(zip(sigs, (res or {}).get("value") or [None] * len(sigs), strict=False))
        gone: list[str] = []
        for sig in sigs:
            st = statuses.get(sig)
            if st is None or st.get("err") is not None:
                # Double-check on the transaction itself before calling it dropped.
                again = await self.rpc.request(
                    "getTransaction", [sig, {**TX_CONFIG, "commitment": "confirmed"}]
                )
                if again is None or (again.get("meta") or {}).get("err") is not None:
                    gone.append(sig)
        ids = [r["id"] for r in due if r["tx_hash"] in gone]
        if not ids:
            return
        reason = f"never finalized: dropped fork (finalized slot {finalized} passed it)"
        async with self.pool.acquire() as conn, conn.transaction():
            orphaned = await ledger.orphan(conn, ids, reason)
        stats.orphaned += len(orphaned)
        metrics.REORGS.labels(self.chain.name).inc()  # a dropped fork is Solana's reorg
        for sig in gone:
            self._pending.pop(sig, None)
        log.warning("solana_orphaned", signatures=gone, finalized=finalized)

    # ---- the loop -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, burst: bool = False) -> None:
        """Follow until ``stop`` (or, with ``burst``, until one clean pass)."""
        structlog.contextvars.bind_contextvars(chain=self.chain.name)
        hint_task = None
        if self.chain.ws_urls and not burst:
            hint_task = asyncio.create_task(
                solana_ws.hints(
                    self.chain.ws_urls,
                    lambda: list(self.accounts),
                    self._wake,
                    stop,
                    changed=self._accounts_changed,
                    chain=self.chain.name,
                )
            )
        backoff = 0.5
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    stats = await self.sync_once()
                except RETRIED as exc:
                    log.warning("solana_pass_failed", error=str(exc), retry_in=backoff)
                    await solana_ws.wait_for_wake(stop, None, backoff)
                    backoff = min(10.0, backoff * 2)
                    continue
                backoff = 0.5
                progress.beat(self.chain.name)  # feeds READY=1 and the systemd watchdog
                if stats.credited or stats.observed or stats.orphaned:
                    log.info("solana_pass", **vars(stats))
                if burst:
                    return
                await solana_ws.wait_for_wake(stop, self._wake, self.poll_interval)
        finally:
            if hint_task is not None:
                hint_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await hint_task
            await self.rpc.aclose()


def rpc_pool(chain: SolanaChain) -> rpc.RpcPool:
    """The shared RPC pool, set up for one Solana network (the one place that builds it):
    every endpoint must answer the network's genesis hash, or it is refused for good."""
    return rpc.RpcPool(
        chain.name,
        chain.rpc_urls,
        kind="solana",
        commitment=chain.commitment,
        rotate_codes=ROTATE_CODES,
        genesis_hash=chain.genesis_hash,
    )


def make_follower(settings: Settings, pool: db.Pool, name: str, **kw: Any) -> SolanaFollower:
    chain = settings.solana_chain(name)
    client = rpc_pool(chain)
    kw.setdefault("refund_wallet", _refund_wallet(settings))
    return SolanaFollower(chain, pool, client, min_units=settings.min_payment_units, **kw)


def _refund_wallet(settings: Settings) -> str | None:
    try:
        return settings.refund_solana_address()
    except ValueError:  # a malformed key: load_settings refused it already
        return None


def followers(settings: Settings, pool: db.Pool) -> list[follower.Follower]:
    """A follower per Solana network with an RPC URL and a receiving wallet configured."""
    out = []
    for chain in settings.solana_chains():
        if chain.enabled:
            made = make_follower(settings, pool, chain.name)
            out.append(follower.Follower(chain=chain.name, run=made.run))
    return out
