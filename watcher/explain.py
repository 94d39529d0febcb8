"""``watcher explain``: why a transaction was (or was not) credited, for the operator on support.

Input is a live receipt (``eth_getTransactionReceipt``) or a saved file holding
a receipt, a list of receipts (``eth_getBlockReceipts``) or a list of logs from
any number of transactions (``eth_getLogs``), bare or inside a JSON-RPC
response envelope (also the ``[{request, response}]`` shape recorded test
suites use). Every ERC-20 ``Transfer`` log gets the verdict the follower would
apply (``evm_logs.verdict``). When the database is reachable, each transfer
also shows the ledger's state and its confirmations.

JSON output keeps addresses lowercase (as stored); the human output shows them
checksummed. Amounts are strings of base units in JSON, never floats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from eth_utils.address import to_checksum_address

from watcher import db, rpc
from watcher.chains import solana_explain
from watcher.chains.evm_logs import Verdict, parse_transfer, verdict
from watcher.keys import evm_address_problem
from watcher.settings import USDC_UNIT, Settings


@dataclass
class TransferLine:
    log_index: int
    token: str
    from_address: str
    to_address: str
    amount: int
    verdict: Verdict
    block_number: int | None = None
    state: str | None = None
    confirmations: int | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "log_index": self.log_index,
            "token": self.token,
            "from": self.from_address,
            "to": self.to_address,
            "amount": str(self.amount),
            "verdict": self.verdict,
        }
        if self.state is not None:
            out["state"] = self.state
        if self.confirmations is not None:
            out["confirmations"] = self.confirmations
        return out


@dataclass
class TxLine:
    tx: str
    status: str  # success, failed, unknown
    transfers: list[TransferLine] = field(default_factory=list)


@dataclass
class Report:
    chain: str
    usdc: str
    receivers: frozenset[str]
    transactions: list[TxLine]
    notes: list[str] = field(default_factory=list)

    @property
    def credit_total(self) -> int:
        return sum(
            t.amount for tx in self.transactions for t in tx.transfers if t.verdict == "credit"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "transactions": [
                {"tx": tx.tx, "status": tx.status, "transfers": [t.as_json() for t in tx.transfers]}
                for tx in self.transactions
            ],
            "credit_total": str(self.credit_total),
        }


# ---- reading what the node (or the file) says -------------------------------------------


def unwrap(data: Any) -> Any:
    """Strip JSON-RPC envelopes and recorded ``[{request, response}]`` wrappers."""
    while True:
        if (
            isinstance(data, list)
            and len(data) == 1
            and isinstance(data[0], dict)
            and ("response" in data[0])
        ):
            data = data[0]["response"]
            continue
        if isinstance(data, dict) and "response" in data and "request" in data:
            data = data["response"]
            continue
        if isinstance(data, dict) and "result" in data and ("jsonrpc" in data or "id" in data):
            data = data["result"]
            continue
        return data


def receipts_of(data: Any) -> list[tuple[str, str, list[Mapping[str, Any]]]]:
    """``(tx_hash, status, logs)`` per transaction in a receipt, receipt list or log list."""
    data = unwrap(data)
    items = data if isinstance(data, list) else [data]
    if not all(isinstance(i, dict) for i in items):
        raise ValueError("expected a receipt, a list of receipts or a list of logs")
    out: dict[str, tuple[str, str, list[Mapping[str, Any]]]] = {}
    for item in items:
        if "logs" in item:  # a receipt
            tx = str(item.get("transactionHash", "")).lower()
            status = {"0x1": "success", "0x0": "failed"}.get(str(item.get("status")), "unknown")
            out[tx] = (tx, status, list(item.get("logs") or []))
        elif "topics" in item:  # a log: only successful transactions emit logs
            tx = str(item.get("transactionHash", "")).lower()
            out.setdefault(tx, (tx, "success", []))[2].append(item)
        else:
            raise ValueError("an entry is neither a receipt nor a log")
    return list(out.values())


def judge(
    chain: str,
    receipts: list[tuple[str, str, list[Mapping[str, Any]]]],
    *,
    usdc: str,
    receivers: frozenset[str],
    min_units: int,
) -> Report:
    """The verdict for every ERC-20 Transfer log in ``receipts``."""
    txs: list[TxLine] = []
    for tx, status, logs in receipts:
        line = TxLine(tx, status)
        for lg in logs:
            raw = parse_transfer(lg)
            if raw is None:
                continue  # not an ERC-20 Transfer (other events, NFT transfers, malformed)
            v = verdict(
                raw,
                usdc=usdc,
                receivers=receivers,
                min_units=min_units,
                tx_failed=status == "failed",
            )
            line.transfers.append(
                TransferLine(
                    raw.log_index,
                    raw.token,
                    raw.from_address,
                    raw.to_address,
                    raw.amount,
                    v,
                    raw.block_number,
                )
            )
        txs.append(line)
    return Report(chain, usdc, receivers, txs)


async def annotate_from_db(report: Report, dsn: str) -> None:
    """Add the ledger's state and confirmations; a note instead when the DB is unreachable."""
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        report.notes.append(f"database unreachable ({type(exc).__name__}): no ledger state shown")
        return
    try:
        cur = await conn.fetchrow(db.q("get_cursor"), report.chain, "logs")
        head = cur["head"] if cur is not None else None
        for tx in report.transactions:
            rows = {
                r["log_index"]: r
                for r in await conn.fetch(db.q("payments_by_tx"), report.chain, tx.tx)
            }
            for t in tx.transfers:
                row = rows.get(t.log_index)
                t.state = "not_recorded" if row is None else row["state"]
                if row is not None and row["reorged_after_credit"]:
                    # Off the canonical chain since it was credited: buys nothing for now.
                    t.state += (
                        " (reorged after credit: re-included, suspended until confirmed)"
                        if row["relanded_at"] is not None
                        else " (reorged after credit: not claimable, its token suspended)"
                    )
                if head is not None and t.block_number is not None and t.confirmations is None:
                    t.confirmations = max(0, head - t.block_number + 1)
    finally:
        await conn.close()


async def fetch_receipt(pool: rpc.RpcPool, tx: str) -> tuple[Any, int | None]:
    """The live receipt and the node's head (for confirmations)."""
    receipt = await pool.request("eth_getTransactionReceipt", [tx])
    head = int(await pool.request("eth_blockNumber", []), 16) if receipt is not None else None
    return receipt, head


# ---- output ----------------------------------------------------------------------------


def _usdc(units: int) -> str:
    whole, frac = divmod(units, USDC_UNIT)
    return f"{whole:,}.{frac:06d}"


def render(report: Report) -> str:
    """The human view: one block per transaction, transfers to others summarised."""
    out: list[str] = []
    if not report.receivers:
        out.append("note: no receiving address configured or given (--receiver): nothing is ours")
    for tx in report.transactions:
        out.append(f"{report.chain} tx {tx.tx}  status: {tx.status}")
        shown = [t for t in tx.transfers if t.verdict != "not_ours"]
        for t in shown:
            token = "USDC" if t.token == report.usdc else f"token {to_checksum_address(t.token)}"
            extra = f"  [ledger: {t.state}]" if t.state else ""
            if t.confirmations is not None:
                extra += f"  [{t.confirmations} confirmations]"
            out.append(
                f"  log {t.log_index}: {_usdc(t.amount)} {token} "
                f"{to_checksum_address(t.from_address)} -> {to_checksum_address(t.to_address)}"
                f"  => {t.verdict}{extra}"
            )
        others = len(tx.transfers) - len(shown)
        if others:
            out.append(f"  ({others} transfer(s) to addresses that are not ours)")
        if not tx.transfers:
            out.append("  no ERC-20 Transfer logs")
    out.append(
        f"credit total: {_usdc(report.credit_total)} USDC ({report.credit_total} base units)"
    )
    out.extend(f"note: {n}" for n in report.notes)
    return "\n".join(out)


# ---- the command -------------------------------------------------------------------------


def _address(value: str, what: str) -> str:
    if why := evm_address_problem(value):
        raise ValueError(f"{what} {value!r} {why}")
    return value.lower()


async def explain_evm(args: argparse.Namespace, settings: Settings) -> tuple[str, int]:
    """Explain an EVM transaction (or file); returns (output, exit code)."""
    chain = settings.evm_chain(args.chain)
    try:
        usdc = _address(args.token, "--token") if args.token else chain.usdc
        given = frozenset(_address(r, "--receiver") for r in args.receiver)
    except ValueError as exc:
        return str(exc), 2
    receivers = given or frozenset(chain.receivers)
    tx = str(args.tx).lower() if args.tx else None
    head: int | None = None
    if args.from_file:
        try:
            text = await asyncio.to_thread(Path(args.from_file).read_text, encoding="utf-8")
            data = json.loads(text)
            receipts = receipts_of(data)
        except (OSError, ValueError) as exc:
            return f"cannot read {args.from_file}: {exc}", 2
    else:
        if tx is None:
            return "give a TX_HASH, or --from-file PATH", 2
        if not chain.rpc_urls:
            return f"no RPC URL for {chain.name}: set X402_{chain.name.upper()}_RPC_URL", 2
        pool = rpc.RpcPool(chain.name, chain.rpc_urls, chain_id=chain.chain_id)
        try:
            receipt, head = await fetch_receipt(pool, tx)
        finally:
            await pool.aclose()
        if receipt is None:
            return f"{tx}: no receipt on {chain.name} (unknown to the node, or still pending)", 1
        receipts = receipts_of(receipt)
    if tx is not None:
        receipts = [r for r in receipts if r[0] == tx]
        if not receipts:
            return f"{tx}: not in {args.from_file}", 1
    report = judge(
        chain.name, receipts, usdc=usdc, receivers=receivers, min_units=settings.min_payment_units
    )
    _confirmations(report, head)
    if settings.database_url is not None:
        await annotate_from_db(report, settings.database_url.get_secret_value())
    if args.json:
        return json.dumps(report.as_json(), indent=2), 0
    return render(report), 0


def _confirmations(report: Report, head: int | None) -> None:
    if head is None:
        return
    for t in _transfers(report):
        if t.block_number is not None:
            t.confirmations = max(0, head - t.block_number + 1)


def _transfers(report: Report) -> Iterator[TransferLine]:
    for tx in report.transactions:
        yield from tx.transfers


Explainer = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, tuple[str, int]]]

# One explainer per chain, all with the same arguments and JSON shape.
EXPLAINERS: dict[str, Explainer] = {
    "base": explain_evm,
    "ethereum": explain_evm,
    "solana": solana_explain.explain_solana,
}
