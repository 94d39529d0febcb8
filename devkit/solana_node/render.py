"""JSON shapes of a real RPC node: transactions (jsonParsed / json / base64) and accounts."""

from __future__ import annotations

import base64
from typing import Any

from solders.account import Account
from solders.message import MessageV0

from devkit.solana_node import chain, layouts, parse


class UnsupportedVersion(Exception):
    pass


def _version(rec: chain.TxRecord) -> Any:
    return 0 if isinstance(rec.tx.message, MessageV0) else "legacy"


def _instruction(
    rec: chain.TxRecord,
    program_index: int,
    accounts: bytes | list[int],
    data: bytes,
    stack: int | None,
    parsed: bool,
) -> dict[str, Any]:
    if not parsed:
        return {
            "accounts": list(accounts),
            "data": parse.b58encode(data),
            "programIdIndex": program_index,
            "stackHeight": stack,
        }
    keys = [rec.keys[i] for i in accounts]
    return parse.parse_instruction(rec.keys[program_index], keys, data, stack)


def _inner(rec: chain.TxRecord, parsed: bool) -> list[dict[str, Any]]:
    out = []
    for index, group in enumerate(rec.inner):
        if not group:
            continue
        items = []
        for inner in group:
            ix = inner.instruction()
            items.append(
                _instruction(
                    rec,
                    ix.program_id_index,
                    bytes(ix.accounts),
                    bytes(ix.data),
                    inner.stack_height(),
                    parsed,
                )
            )
        out.append({"index": index, "instructions": items})
    return out


def _old(balances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Token balances as nodes rendered them before they carried ``owner`` (and ``programId``)."""
    return [{k: v for k, v in b.items() if k not in ("owner", "programId")} for b in balances]


def _meta(rec: chain.TxRecord, parsed: bool, old_balances: bool = False) -> dict[str, Any]:
    pre, post = rec.pre_tokens, rec.post_tokens
    if old_balances:
        pre, post = _old(pre), _old(post)
    return {
        "computeUnitsConsumed": rec.units,
        "err": rec.err,
        "fee": rec.fee,
        "innerInstructions": _inner(rec, parsed),
        "logMessages": rec.logs,
        "postBalances": rec.post_balances,
        "postTokenBalances": post,
        "preBalances": rec.pre_balances,
        "preTokenBalances": pre,
        "rewards": [],
        "status": {"Ok": None} if rec.err is None else {"Err": rec.err},
    }


def _lookups(rec: chain.TxRecord) -> list[dict[str, Any]]:
    msg = rec.tx.message
    return [
        {
            "accountKey": str(lk.account_key),
            "writableIndexes": list(lk.writable_indexes),
            "readonlyIndexes": list(lk.readonly_indexes),
        }
        for lk in getattr(msg, "address_table_lookups", []) or []
    ]


def transaction(
    rec: chain.TxRecord, encoding: str, max_version: int | None, *, old_balances: bool = False
) -> dict[str, Any]:
    """A getTransaction result (``old_balances``: in the format of before token balances
    named their owner; no recording of a successful old-format transfer is at hand)."""
    version = _version(rec)
    if version == 0 and max_version is None:
        raise UnsupportedVersion(version)
    msg = rec.tx.message
    parsed = encoding == "jsonParsed"
    tx: Any
    if encoding in ("base64", "base58"):
        raw = bytes(rec.tx)
        tx = (
            [base64.b64encode(raw).decode(), "base64"]
            if encoding == "base64"
            else [parse.b58encode(raw), "base58"]
        )
    else:
        static = len(msg.account_keys)
        if parsed:
            account_keys: list[Any] = [
                {
                    "pubkey": key,
                    "signer": rec.signer[i],
                    "source": "transaction" if i < static else "lookupTable",
                    "writable": rec.writable[i],
                }
                for i, key in enumerate(rec.keys)
            ]
        else:
            account_keys = rec.keys[:static]
        message: dict[str, Any] = {
            "accountKeys": account_keys,
            "instructions": [
                _instruction(
                    rec, ix.program_id_index, bytes(ix.accounts), bytes(ix.data), 1, parsed
                )
                for ix in msg.instructions
            ],
            "recentBlockhash": str(msg.recent_blockhash),
        }
        if not parsed:
            h = msg.header
            message["header"] = {
                "numReadonlySignedAccounts": h.num_readonly_signed_accounts,
                "numReadonlyUnsignedAccounts": h.num_readonly_unsigned_accounts,
                "numRequiredSignatures": h.num_required_signatures,
            }
        if version == 0:
            message["addressTableLookups"] = _lookups(rec)
        tx = {"message": message, "signatures": [str(s) for s in rec.tx.signatures]}
    meta = _meta(rec, parsed, old_balances)
    if max_version is not None and not parsed:  # jsonParsed shows them in accountKeys instead
        static = len(msg.account_keys)
        loaded = rec.keys[static:]
        n_w = sum(1 for w in rec.writable[static:] if w)
        meta["loadedAddresses"] = {"writable": loaded[:n_w], "readonly": loaded[n_w:]}
    out: dict[str, Any] = {
        "blockTime": rec.block_time,
        "meta": meta,
        "slot": rec.slot,
        "transaction": tx,
        "transactionIndex": 0,
    }
    if max_version is not None:
        out["version"] = version
    return out


def account(acct: Account, encoding: str, chain_: chain.Chain) -> dict[str, Any]:
    """An account object (getAccountInfo value, getTokenAccountsByOwner item's account)."""
    data = bytes(acct.data)
    rendered: Any = [base64.b64encode(data).decode(), "base64"]
    if encoding == "binary":  # the legacy default: a bare base58 string
        rendered = parse.b58encode(data)
    elif encoding == "base58":
        rendered = [parse.b58encode(data), "base58"]
    elif encoding == "jsonParsed":
        rendered = _parsed_data(acct, data, chain_) or rendered
    return {
        "data": rendered,
        "executable": acct.executable,
        "lamports": acct.lamports,
        "owner": str(acct.owner),
        "rentEpoch": 18446744073709551615,
        "space": len(data),
    }


def _parsed_data(acct: Account, data: bytes, chain_: chain.Chain) -> dict[str, Any] | None:
    if not layouts.is_token_program(acct.owner):
        return None
    program = "spl-token" if str(acct.owner) == parse.TOKEN else "spl-token-2022"
    tok = layouts.decode_token_account(data)
    if tok is not None:
        mint, owner, amount, state = tok
        from solders.pubkey import Pubkey

        mint_acct = chain_.svm.get_account(Pubkey.from_string(mint))
        mint_info = layouts.decode_mint(bytes(mint_acct.data)) if mint_acct else None
        decimals = mint_info["decimals"] if mint_info else 0
        info = {
            "isNative": data[109] == 1,
            "mint": mint,
            "owner": owner,
            "state": "frozen" if state == 2 else "initialized",
            "tokenAmount": parse.ui_amount(amount, decimals),
        }
        kind = "account"
    else:
        mint_info = layouts.decode_mint(data)
        if mint_info is None:
            return None
        info = dict(mint_info)
        info["supply"] = str(info["supply"])
        kind = "mint"
    return {"parsed": {"info": info, "type": kind}, "program": program, "space": len(data)}
