"""The Solana follower's outgoing side: our refund transfers, seen and confirmed.

The refund wallet (``X402_REFUND_SOLANA_KEYPAIR``'s, or ``X402_REFUND_SOLANA_ADDRESS``
for exported refunds) sends from its associated USDC token account. The follower
follows that account like a receiving one (its signatures, cursor and batches), and
this module reads each transaction for what *left* it: every other USDC account whose
balance went up while ours went down is one :class:`outgoing.Outgoing` (destination
owner, amount). Those from finalized transactions go to ``refunds.outgoing.observe`` in
the batch's commit transaction, which links them to their refunds and confirms them
(a transfer seen only at ``confirmed`` could still be dropped with its fork, so it waits
for the next pass).

Money coming *into* the refund account is never a payment unless the account is also a
receiving one (the refund wallet is the receiving wallet): then its increases are
credited as before and its decreases, read here, never are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from watcher import db
from watcher.chains import solana_accounts, solana_tx
from watcher.refunds import outgoing


@dataclass(frozen=True, slots=True)
class RefundWallet:
    """The refund wallet and its USDC token account on one network."""

    wallet: str
    account: str
    mint: str


def refund_wallet(wallet: str | None, mint: str) -> RefundWallet | None:
    """The refund wallet on a network with ``mint`` (None: no refund wallet configured)."""
    if not wallet:
        return None
    return RefundWallet(wallet, solana_accounts.associated_token_account(wallet, mint), mint)


def followed(receiving: Sequence[str], refund: RefundWallet | None) -> list[str]:
    """The accounts a pass syncs: the receiving ones, then the refund wallet's (if not one)."""
    out = list(receiving)
    if refund is not None and refund.account not in out:
        out.append(refund.account)
    return out


def transfers(
    chain: str, tx: solana_tx.TxView | None, account: str, refund: RefundWallet | None
) -> list[outgoing.Outgoing]:
    """What ``tx`` moved out of the refund wallet's ``account`` in USDC, per receiver.

    Balance deltas, as for payments: a successful transaction in which our account went
    down and another went up. ``log_index`` is the receiving account's index in the
    transaction (unique per transfer, stable across re-reads). Nothing for any other
    account.
    """
    if refund is None or tx is None or account != refund.account:
        return []
    ours = tx.change_of(account)
    if tx.failed or ours is None or ours.mint != refund.mint or ours.delta >= 0:
        return []
    out = []
    for c in tx.changes:
        if c.account == account or c.mint != refund.mint or c.delta <= 0:
            continue
        out.append(
            outgoing.Outgoing(
                tx_hash=tx.signature,
                log_index=c.account_index,
                block_number=tx.slot,
                block_hash=None,
                from_address=refund.wallet,
                to_address=c.owner or c.account,  # the owner; old answers name none
                amount=c.delta,
                token=refund.mint,
            )
        )
    return out


class Seen(Protocol):
    """What the commit reads of a view (``solana_commit.View``)."""

    @property
    def final(self) -> bool: ...

    @property
    def outgoing(self) -> Sequence[outgoing.Outgoing]: ...


async def observe(conn: db.Connection, chain: str, views: Sequence[Seen]) -> list[int]:
    """Hand the finalized outgoing transfers of a batch to the refunds (the caller's
    transaction); returns the refunds confirmed now."""
    final = [t for v in views if v.final for t in v.outgoing]
    if not final:
        return []
    rows = await conn.fetch(db.q("refund_solana_linked"), chain, [t.tx_hash for t in final])
    linked = {(str(r["out_tx_hash"]), int(r["out_log_index"])) for r in rows}
    new = [t for t in final if (t.tx_hash, t.log_index) not in linked]
    # All links are of finalized transfers, so every linked refund up to the newest is deep.
    return await outgoing.observe(conn, chain, new, max(t.block_number for t in final))
