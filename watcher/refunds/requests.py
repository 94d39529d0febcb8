"""A refund request from the operator, as the admin API and the CLI make it: the refund
key answered first (a repeat returns the same refund), the destination judged
(``proof``), a contract source refused without a proof (``eth_getCode``, asked before the
transaction), then the refund ledger's one transaction (``store.create``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg

from watcher import db, errors, networks
from watcher.refunds import model, proof, solana_proof, store
from watcher.settings import Settings

# (chain, address) -> the code at that address ("0x" for an account without code).
CodeOf = Callable[[str, str], Awaitable[str]]
# EIP-7702: an account delegating to code is still an account someone holds the key of.
_DELEGATION_PREFIX = "0xef0100"


@dataclass(frozen=True, slots=True)
class Order:
    payment_id: int
    kind: str
    reason: str
    operator: str
    refund_key: str | None = None
    claimed: proof.Claimed = field(default_factory=proof.Claimed)
    client: str | None = None


def is_contract(code: str) -> bool:
    """Code at an address means a contract (a 7702 delegation is still a key's account)."""
    text = code.strip().lower()
    return text not in ("", "0x") and not text.startswith(_DELEGATION_PREFIX)


async def request(
    pool: db.Pool, settings: Settings, order: Order, code_of: CodeOf
) -> tuple[asyncpg.Record, bool]:
    """Request the refund ``order``; returns (refund, created now) or raises Refused."""
    key = order.refund_key or store.new_key()
    async with pool.acquire() as conn:
        old = await store.by_key(conn, key)
        pay = await conn.fetchrow(db.q("refund_payment"), order.payment_id)
    if old is not None:
        if int(old["payment_id"]) != order.payment_id or old["kind"] != order.kind:
            raise store.key_reused(key)
        return old, False
    if pay is None:
        raise model.Refused(
            404,
            "payment_not_found",
            f"no payment {order.payment_id}",
            "take the id from the candidates or verify-payment",
        )
    dest, how = _judge(pay, order.claimed)
    if dest in _ours(settings, pay["chain"]):
        raise model.Refused(
            409,
            "destination_is_ours",
            f"{dest} is one of our own addresses on {pay['chain']}: the refund would come back "
            "to us (and be recorded as a new payment)",
            "send it to an address the payer controls (signature or claim secret)",
        )
    if how == "source" and networks.family(pay["chain"]) == "evm":
        try:
            code = await code_of(pay["chain"], dest)
        except errors.RpcError as exc:
            raise model.Refused(
                503,
                "rpc_unavailable",
                f"cannot tell whether {dest} is a contract: {exc}",
                "try again when the network's RPC answers",
            ) from exc
        if is_contract(code):
            raise proof.contract_refusal(dest)
    ask = store.Ask(
        payment_id=order.payment_id,
        kind=order.kind,
        reason=order.reason,
        operator=order.operator,
        refund_key=key,
        destination=dest,
        proof=how,
        price=settings.price_per_call_units,
        expect_amount=order.claimed.amount,
        client=order.client,
    )
    async with pool.acquire() as conn:
        return await store.create(conn, ask)


def _ours(settings: Settings, chain: str) -> frozenset[str]:
    """Addresses of ours on ``chain`` a refund must never go to: the receiving
    addresses and the refund wallet itself (a contract, USDC's too, is refused by its code)."""
    if networks.family(chain) == "evm":
        net = settings.evm_chain(chain)
        wallet = settings.refund_evm_wallet()
        return frozenset({*net.receivers, *([wallet] if wallet else [])})
    sol = settings.solana_chain(chain)
    return frozenset(a for a in (sol.owner, *sol.token_accounts) if a)


def _judge(pay: asyncpg.Record, claimed: proof.Claimed) -> tuple[str, str]:
    source = pay["from_address"]
    secret = pay["claim_secret_hash"]
    judge = proof.judge if networks.family(pay["chain"]) == "evm" else solana_proof.judge
    return judge(
        chain=pay["chain"],
        tx_hash=pay["tx_hash"],
        log_index=int(pay["log_index"]),
        source=source,
        secret_hash=bytes(secret) if secret is not None else None,
        given=claimed,
    )
