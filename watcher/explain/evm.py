"""``watcher explain`` on an EVM network: every ERC-20 Transfer log of a transaction, judged.

Input is a live receipt (``eth_getTransactionReceipt``) or a saved file holding
a receipt, a list of receipts (``eth_getBlockReceipts``) or a list of logs from
any number of transactions (``eth_getLogs``), bare or inside a JSON-RPC
response envelope (also the ``[{request, response}]`` shape recorded test
suites use). Every ERC-20 ``Transfer`` log gets the verdict the follower would
apply (``evm_logs.verdict``). When the database is reachable, each transfer
also shows the ledger's state and its confirmations.

The report is the common :mod:`watcher.explain.model`: JSON keeps addresses
lowercase (as stored); the human output shows them checksummed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eth_utils.address import to_checksum_address

from watcher import chain_settings, keys, rpc
from watcher.chains import evm_logs
from watcher.explain import model
from watcher.settings import Settings

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
) -> model.Report:
    """The verdict for every ERC-20 Transfer log in ``receipts``."""
    txs: list[model.Tx] = []
    for tx, status, logs in receipts:
        line = model.Tx(tx, status)
        for lg in logs:
            raw = evm_logs.parse_transfer(lg)
            if raw is None:
                continue  # not an ERC-20 Transfer (other events, NFT transfers, malformed)
            v = evm_logs.verdict(
                raw,
                usdc=usdc,
                receivers=receivers,
                min_units=min_units,
                tx_failed=status == "failed",
            )
            line.transfers.append(
                model.Transfer(
                    raw.log_index,
                    raw.token,
                    raw.from_address,
                    raw.to_address,
                    raw.amount,
                    v,
                    block=raw.block_number,
                )
            )
        txs.append(line)
    return model.Report(
        chain,
        usdc,
        receivers,
        txs,
        index_label="log",
        show_address=to_checksum_address,
        cursor_stream="logs",
    )


async def fetch_receipt(pool: rpc.RpcPool, tx: str) -> tuple[Any, int | None]:
    """The live receipt and the node's head (for confirmations)."""
    receipt = await pool.request("eth_getTransactionReceipt", [tx])
    head = int(await pool.request("eth_blockNumber", []), 16) if receipt is not None else None
    return receipt, head


# ---- the command -------------------------------------------------------------------------


def _address(value: str, what: str) -> str:
    if why := keys.evm_address_problem(value):
        raise ValueError(f"{what} {value!r} {why}")
    return value.lower()


async def report(args: argparse.Namespace, settings: Settings) -> model.Report | model.Refusal:
    """The report on an EVM transaction (live) or a saved file, or why there is none."""
    chain = settings.evm_chain(args.chain)
    try:
        usdc = _address(args.token, "--token") if args.token else chain.usdc
        given = frozenset(_address(r, "--receiver") for r in args.receiver)
    except ValueError as exc:
        return model.Refusal(str(exc), 2)
    receivers = given or frozenset(chain.receivers)
    tx = str(args.tx).lower() if args.tx else None
    head: int | None = None
    if args.from_file:
        try:
            text = await asyncio.to_thread(Path(args.from_file).read_text, encoding="utf-8")
            data = json.loads(text)
            receipts = receipts_of(data)
        except (OSError, ValueError) as exc:
            return model.Refusal(f"cannot read {args.from_file}: {exc}", 2)
    else:
        if tx is None:
            return model.Refusal("give a TX_HASH, or --from-file PATH", 2)
        if not chain.rpc_urls:
            var = chain_settings.prefix(chain.network).upper() + "RPC_URL"  # base-sepolia: _
            why = f"no RPC URL for {chain.name}: set {var}"
            return model.Refusal(why, 2)
        pool = rpc.RpcPool(chain.name, chain.rpc_urls, chain_id=chain.chain_id)
        try:
            receipt, head = await fetch_receipt(pool, tx)
        finally:
            await pool.aclose()
        if receipt is None:
            why = f"{tx}: no receipt on {chain.name} (unknown to the node, or still pending)"
            return model.Refusal(why, 1)
        receipts = receipts_of(receipt)
    if tx is not None:
        receipts = [r for r in receipts if r[0] == tx]
        if not receipts:
            return model.Refusal(f"{tx}: not in {args.from_file}", 1)
    out = judge(
        chain.name, receipts, usdc=usdc, receivers=receivers, min_units=settings.min_payment_units
    )
    _confirmations(out, head)
    return out


def _confirmations(report: model.Report, head: int | None) -> None:
    if head is None:
        return
    for t in report.transfers():
        if t.block is not None:
            t.confirmations = max(0, head - t.block + 1)
