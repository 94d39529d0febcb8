"""The Solana refund sender (``senders.Sender``): sign, record, send, re-check, exactly once.

* **requested**: the transaction is planned and the refund wallet's funds checked over
  RPC (no connection held), then signed and stored in one short transaction (raw bytes,
  signature, blockhash, ``lastValidBlockHeight``: status ``signed``) that commits
  BEFORE ``sendTransaction``. A crash after the commit leaves bytes to send, never a
  reason to sign again.
* **signed / sent**: every pass asks what became of the stored signature
  (:func:`solana.check`): landed -> ``sent`` (the follower confirms it when finalized);
  failed on chain at ``finalized`` -> ``failed`` (nothing moved; an operator looks);
  unknown while the blockhash can still land -> the same bytes again (same signature:
  never twice); unknown with the finalized height past ``lastValidBlockHeight`` -> it
  can never land, and only then is a new transaction signed, in place of the old one
  (whose signature is kept in ``detail.expired``), compare-and-swapped on the old
  signature so two senders never both re-sign.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import structlog
from solders.keypair import Keypair

from watcher import db, errors, rpc
from watcher.chains import solana as chains_solana
from watcher.refunds import solana, store
from watcher.settings import Settings, SolanaChain

log = structlog.get_logger(__name__)

PASS_LIMIT = 20  # refunds one pass signs or re-checks per status (bounded work)


def detail_of(signed: solana.Signed, before: Any = None) -> dict[str, Any]:
    """What the row keeps beside the bytes: the blockhash's life and the signatures that
    expired before this one."""
    old = json.loads(before) if isinstance(before, str) else dict(before or {})
    return {
        "blockhash": signed.blockhash,
        "last_valid_block_height": signed.last_valid_block_height,
        "token_account": signed.plan.destination,
        "creates_token_account": signed.plan.create_account,
        "expired": list(old.get("expired") or []),
    }


def stored(row: Any) -> solana.Signed:
    """The signed transaction a row holds, as :mod:`solana` takes it."""
    detail = row["detail"]
    detail = json.loads(detail) if isinstance(detail, str) else dict(detail or {})
    plan = solana.Plan(
        payer=str(row["wallet"]),
        mint=str(row["token"]),
        source=solana.associated(str(row["wallet"]), str(row["token"])),
        owner=str(row["destination"]),
        destination=str(detail.get("token_account") or ""),
        amount=int(row["amount"]),
        create_account=bool(detail.get("creates_token_account")),
    )
    return solana.Signed(
        raw=base64.b64decode(str(row["raw_tx"])),
        signature=str(row["tx_hash"]),
        blockhash=str(detail.get("blockhash") or ""),
        last_valid_block_height=int(detail["last_valid_block_height"]),
        plan=plan,
    )


class SolanaSender:
    """Sends one Solana network's refunds from the refund keypair's wallet."""

    def __init__(self, chain: SolanaChain, secret: bytes, rpc_pool: rpc.RpcPool) -> None:
        self.chain = chain.name
        self._mint = chain.usdc_mint
        self._key = Keypair.from_bytes(secret)
        self.wallet = str(self._key.pubkey())
        self.rpc = rpc_pool

    async def aclose(self) -> None:
        await self.rpc.aclose()

    async def run_once(self, pool: db.Pool) -> int:
        """Re-check what was signed first (a restart heals before it signs more), then sign
        and send what was requested."""
        work = 0
        for rid in await store.due(pool, self.chain, ("signed", "sent"), PASS_LIMIT):
            work += await self._recheck(pool, rid)
        for rid in await store.due(pool, self.chain, ("requested",), PASS_LIMIT):
            work += await self._send_new(pool, rid)
        return work

    async def _prepare(self, pool: db.Pool, row: Any) -> tuple[solana.Plan, str, int] | None:
        """Plan, funds and a blockhash over RPC; None (the problem noted) when not now."""
        rid, dest, amount = int(row["id"]), str(row["destination"]), int(row["amount"])
        try:
            plan = await solana.plan(self.rpc, self.wallet, self._mint, dest, amount)
            await solana.check_funds(self.rpc, plan)
            blockhash, last_valid = await solana.latest_blockhash(self.rpc)
        except solana.Unfunded as exc:
            await store.note_error(pool, rid, str(exc))
            return None
        except errors.RpcError as exc:
            await store.note_error(pool, rid, f"cannot prepare the transfer: {exc}")
            return None
        return plan, blockhash, last_valid

    async def _send_new(self, pool: db.Pool, rid: int) -> int:
        row = await pool.fetchrow(db.q("refund_by_id"), rid)
        if row is None or row["status"] != "requested":
            return 0
        if row["token"] != self._mint:
            await store.mark_failed(pool, rid, f"the refund sends {row['token']}, not USDC")
            return 1
        prepared = await self._prepare(pool, row)
        if prepared is None:
            return 0
        signed = solana.sign(prepared[0], self._key, prepared[1], prepared[2])
        async with pool.acquire() as conn, conn.transaction():
            if await store.lock_requested(conn, rid) is None:
                return 0  # another sender took it
            await store.mark_signed(
                conn,
                rid,
                wallet=self.wallet,
                nonce=None,
                raw_tx=signed.base64,
                tx_hash=signed.signature,
                detail=detail_of(signed),
            )
        log.info("refund_signed", chain=self.chain, refund=rid, signature=signed.signature)
        await self._broadcast(pool, rid, signed)  # only after the commit above
        return 1

    async def _broadcast(self, pool: db.Pool, rid: int, signed: solana.Signed) -> None:
        try:
            refused = await solana.send(self.rpc, signed)
        except errors.RpcError as exc:  # it may have arrived: the re-check finds out
            await store.note_error(pool, rid, f"broadcast unanswered: {exc}")
            return
        if refused is not None:  # kept signed: the re-check decides (landed, resend, expired)
            await store.note_error(pool, rid, f"the node refused the transaction: {refused}")
            return
        if await store.mark_sent(pool, rid):
            log.info("refund_sent", chain=self.chain, refund=rid, signature=signed.signature)

    async def _recheck(self, pool: db.Pool, rid: int) -> int:
        row = await pool.fetchrow(db.q("refund_by_id"), rid)
        if row is None or row["status"] not in ("signed", "sent") or row["wallet"] != self.wallet:
            return 0
        signed = stored(row)
        try:
            status = await solana.check(self.rpc, signed.signature, signed.last_valid_block_height)
        except errors.RpcError as exc:
            await store.note_error(pool, rid, f"cannot re-check: {exc}")
            return 0
        if status.state == "landed":
            return int(row["status"] == "signed" and await store.mark_sent(pool, rid))
        if status.state == "failed":
            if status.confirmation != "finalized":
                return 0  # a failure on a fork that may still be dropped: wait for it
            why = f"{signed.signature} failed on chain in slot {status.slot}: {status.error}"
            await store.mark_failed(pool, rid, why + "; no USDC moved")
            return 1
        if status.state == "pending":
            await self._broadcast(pool, rid, signed)  # same bytes, same signature
            return 0
        return await self._resign(pool, row, signed, status)

    async def _resign(
        self, pool: db.Pool, row: Any, old: solana.Signed, status: solana.Status
    ) -> int:
        """The old transaction can never land: sign a new one in its place."""
        rid = int(row["id"])
        prepared = await self._prepare(pool, row)
        if prepared is None:
            return 0
        signed = solana.sign(prepared[0], self._key, prepared[1], prepared[2])
        detail = detail_of(signed, row["detail"])
        detail["expired"].append(
            {
                "signature": old.signature,
                "last_valid_block_height": old.last_valid_block_height,
                "finalized_height_seen": status.block_height,
            }
        )
        async with pool.acquire() as conn, conn.transaction():
            swapped = await conn.fetchval(
                db.q("refund_solana_resign"),
                rid,
                old.signature,
                signed.base64,
                signed.signature,
                json.dumps(detail),
            )
        if swapped is None:
            return 0  # another sender re-signed it first, or the follower linked it
        log.warning(
            "refund_resigned",
            chain=self.chain,
            refund=rid,
            expired=old.signature,
            signature=signed.signature,
        )
        await self._broadcast(pool, rid, signed)
        return 1


def can_send(settings: Settings, name: str) -> bool:
    """Solana network ``name`` sends refunds: a refund keypair, an RPC URL and a receiving
    wallet (without one the network takes no payments, and no follower confirms refunds)."""
    chain = settings.solana_chain(name)
    key = settings.value("x402_refund_solana_keypair")
    return key is not None and bool(chain.rpc_urls) and chain.enabled


def sender_for(settings: Settings, name: str) -> SolanaSender | None:
    """The sender of Solana network ``name``: None when it cannot send (:func:`can_send`)."""
    secret = settings.refund_solana_secret()
    chain = settings.solana_chain(name)
    if secret is None or not can_send(settings, name):
        return None
    return SolanaSender(chain, secret, chains_solana.rpc_pool(chain))
