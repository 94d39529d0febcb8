"""JSON-RPC methods of the local node (answers shaped like an Agave node's)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from solders.pubkey import Pubkey

from devkit.solana_node import chain, parse, render

API_VERSION = "2.2.0"


class RpcFault(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def _invalid(msg: str) -> RpcFault:
    return RpcFault(-32602, msg)


def _cfg(params: list[Any], index: int) -> dict[str, Any]:
    if len(params) > index and params[index] is not None:
        if not isinstance(params[index], dict):
            raise _invalid("Invalid params: expected a configuration object")
        return dict(params[index])
    return {}


def _pubkey(params: list[Any], index: int = 0) -> str:
    if len(params) <= index or not isinstance(params[index], str):
        raise _invalid("Invalid params: missing address")
    try:
        return str(Pubkey.from_string(params[index]))
    except ValueError as exc:
        raise _invalid("Invalid param: Invalid") from exc


def _commitment(cfg: dict[str, Any]) -> str:
    c = cfg.get("commitment") or "finalized"
    if c not in ("processed", "confirmed", "finalized"):
        raise _invalid(f"Invalid params: unknown commitment {c!r}")
    return "confirmed" if c == "processed" else c


class Methods:
    """Dispatch table over a :class:`chain.Chain`."""

    def __init__(self, chain_: chain.Chain, genesis_hash: str) -> None:
        self.chain = chain_
        self.genesis_hash = genesis_hash
        self.table: dict[str, Callable[[list[Any]], Any]] = {
            "getHealth": lambda p: "ok",
            "getVersion": lambda p: {"solana-core": API_VERSION, "feature-set": 0},
            "getGenesisHash": lambda p: self.genesis_hash,
            "getSlot": self.get_slot,
            "getBlockHeight": self.get_slot,
            "getBlockTime": self.get_block_time,
            "getLatestBlockhash": self.get_latest_blockhash,
            "isBlockhashValid": self.is_blockhash_valid,
            "sendTransaction": self.send_transaction,
            "simulateTransaction": self.simulate_transaction,
            "getSignaturesForAddress": self.get_signatures_for_address,
            "getTransaction": self.get_transaction,
            "getSignatureStatuses": self.get_signature_statuses,
            "getTokenAccountsByOwner": self.get_token_accounts_by_owner,
            "getAccountInfo": self.get_account_info,
            "getMultipleAccounts": self.get_multiple_accounts,
            "getBalance": self.get_balance,
            "requestAirdrop": self.request_airdrop,
            "getMinimumBalanceForRentExemption": self.rent_exemption,
        }

    def call(self, method: str, params: Any) -> Any:
        fn = self.table.get(method)
        if fn is None:
            raise RpcFault(-32601, "Method not found")
        if params is None:
            params = []
        if not isinstance(params, list):
            raise _invalid("Invalid params: expected an array")
        return fn(params)

    def _ctx(self, commitment: str = "finalized") -> dict[str, Any]:
        return {"apiVersion": API_VERSION, "slot": self.chain.bound(commitment)}

    def get_slot(self, params: list[Any]) -> int:
        return self.chain.bound(_commitment(_cfg(params, 0)))

    def get_block_time(self, params: list[Any]) -> int:
        """Unix time of a slot's block; like a real node, an error for a slot with none."""
        slot = params[0] if params and isinstance(params[0], int) else None
        block = self.chain.blocks.get(slot) if slot is not None else None
        if block is None:
            raise RpcFault(-32004, f"Block not available for slot {slot}")
        return block.block_time

    def get_latest_blockhash(self, params: list[Any]) -> dict[str, Any]:
        c = _commitment(_cfg(params, 0))
        block = self.chain.latest_block(c)
        return {
            "context": self._ctx(c),
            "value": {
                "blockhash": block.blockhash,
                "lastValidBlockHeight": block.slot + chain.BLOCKHASH_WINDOW,
            },
        }

    def is_blockhash_valid(self, params: list[Any]) -> dict[str, Any]:
        c = _commitment(_cfg(params, 1))
        valid = isinstance(params[0], str) and params[0] in self.chain.recent_blockhashes()
        return {"context": self._ctx(c), "value": valid}

    def _transaction(self, params: list[Any]) -> tuple[Any, dict[str, Any]]:
        """The transaction in params[0] (base58 by default, or base64) and the config."""
        if not params or not isinstance(params[0], str):
            raise _invalid("Invalid params: missing transaction")
        cfg = _cfg(params, 1)
        encoding = cfg.get("encoding", "base58")
        try:
            if encoding == "base64":
                raw = base64.b64decode(params[0], validate=True)
            elif encoding == "base58":
                from watcher.keys import b58decode

                raw = b58decode(params[0])
            else:
                raise _invalid(f"Invalid params: unsupported encoding: {encoding}")
            from solders.transaction import VersionedTransaction

            return VersionedTransaction.from_bytes(raw), cfg
        except (ValueError, TypeError) as exc:
            raise _invalid(
                f"failed to deserialize solana_transaction::versioned::VersionedTransaction: {exc}"
            ) from exc

    def simulate_transaction(self, params: list[Any]) -> dict[str, Any]:
        tx, cfg = self._transaction(params)
        if cfg.get("replaceRecentBlockhash") and cfg.get("sigVerify"):
            raise _invalid("Invalid params: sigVerify may not be used with replaceRecentBlockhash")
        # Both default to false, as on a real node: a client estimating compute units sends
        # an unsigned transaction with a placeholder blockhash and both switches set so.
        value = self.chain.simulate(
            tx,
            sig_verify=bool(cfg.get("sigVerify", False)),
            replace_blockhash=bool(cfg.get("replaceRecentBlockhash", False)),
        )
        value.update(accounts=None, innerInstructions=None, returnData=None)
        return {"context": self._ctx("confirmed"), "value": value}

    def send_transaction(self, params: list[Any]) -> str:
        tx, cfg = self._transaction(params)
        try:
            return self.chain.submit(tx, preflight=not cfg.get("skipPreflight", False))
        except chain.SendError as exc:
            raise RpcFault(
                -32002,
                f"Transaction simulation failed: {exc}",
                {
                    "accounts": None,
                    "err": exc.err,
                    "innerInstructions": None,
                    "logs": exc.logs or [],
                    "replacementBlockhash": None,
                    "returnData": None,
                    "unitsConsumed": exc.units,
                },
            ) from exc

    def get_signatures_for_address(self, params: list[Any]) -> list[dict[str, Any]]:
        address = _pubkey(params)
        cfg = _cfg(params, 1)
        c = _commitment(cfg)
        if (cfg.get("commitment") or "finalized") == "processed":
            raise _invalid("Method does not support commitment below `confirmed`")
        limit = cfg.get("limit") or 1000
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise _invalid("Invalid limit; max 1000")
        recs = self.chain.signatures_for(address, c, cfg.get("before"), cfg.get("until"), limit)
        return [
            {
                "blockTime": r.block_time,
                "confirmationStatus": self.chain.status_of(r.slot),
                "err": r.err,
                "memo": r.memo,
                "signature": r.signature,
                "slot": r.slot,
            }
            for r in recs
        ]

    def get_transaction(self, params: list[Any]) -> dict[str, Any] | None:
        if not params or not isinstance(params[0], str):
            raise _invalid("Invalid params: missing signature")
        cfg = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
        if len(params) > 1 and isinstance(params[1], str):  # legacy: encoding as 2nd param
            cfg = {"encoding": params[1]}
        if (cfg.get("commitment") or "finalized") == "processed":
            raise _invalid("Method does not support commitment below `confirmed`")
        encoding = cfg.get("encoding", "json")
        if encoding not in ("json", "jsonParsed", "base64", "base58"):
            raise _invalid(f"Invalid params: unknown encoding {encoding!r}")
        rec = self.chain.transaction(params[0], _commitment(cfg))
        if rec is None:
            return None
        try:
            return render.transaction(
                rec,
                encoding,
                cfg.get("maxSupportedTransactionVersion"),
                old_balances=self.chain.old_balances,
            )
        except render.UnsupportedVersion as exc:
            raise RpcFault(
                -32015,
                "Transaction version (0) is not supported by the requesting client. Please try "
                "the request again with the following configuration parameter: "
                '"maxSupportedTransactionVersion": 0',
            ) from exc

    def get_signature_statuses(self, params: list[Any]) -> dict[str, Any]:
        if not params or not isinstance(params[0], list):
            raise _invalid("Invalid params: expected an array of signatures")
        value: list[Any] = []
        for sig in params[0]:
            rec = self.chain.by_sig.get(sig)
            slot = rec.slot if rec else self.chain.airdrops.get(sig)
            if slot is None:
                value.append(None)
                continue
            final = slot <= self.chain.finalized
            err = rec.err if rec else None
            value.append(
                {
                    "confirmationStatus": self.chain.status_of(slot),
                    "confirmations": None if final else self.chain.tip - slot,
                    "err": err,
                    "slot": slot,
                    "status": {"Ok": None} if err is None else {"Err": err},
                }
            )
        return {"context": self._ctx("confirmed"), "value": value}

    def get_token_accounts_by_owner(self, params: list[Any]) -> dict[str, Any]:
        owner = _pubkey(params)
        filt = _cfg(params, 1)
        cfg = _cfg(params, 2)
        if not filt or not ({"mint", "programId"} & set(filt)):
            raise _invalid("Invalid params: expected a mint or programId filter")
        mint = filt.get("mint")
        program = filt.get("programId")
        if program is not None and program not in parse.TOKEN_PROGRAMS:
            raise _invalid("Invalid param: unrecognized Token program id")
        encoding = cfg.get("encoding", "binary")
        found = self.chain.token_accounts_of(owner, mint, program, _commitment(cfg))
        return {
            "context": self._ctx(_commitment(cfg)),
            "value": [
                {"account": render.account(acct, encoding, self.chain), "pubkey": key}
                for key, acct in found
            ],
        }

    def get_account_info(self, params: list[Any]) -> dict[str, Any]:
        key = _pubkey(params)
        cfg = _cfg(params, 1)
        acct = self.chain.account_at(key, _commitment(cfg))
        value = None
        if acct is not None:
            value = render.account(acct, cfg.get("encoding", "binary"), self.chain)
        return {"context": self._ctx(_commitment(cfg)), "value": value}

    def get_multiple_accounts(self, params: list[Any]) -> dict[str, Any]:
        if not params or not isinstance(params[0], list):
            raise _invalid("Invalid params: expected an array of addresses")
        if len(params[0]) > 100:
            raise _invalid("Too many inputs provided; max 100")
        cfg = _cfg(params, 1)
        values = []
        for i in range(len(params[0])):
            acct = self.chain.account_at(_pubkey(params[0], i), _commitment(cfg))
            encoding = cfg.get("encoding", "base64")
            values.append(None if acct is None else render.account(acct, encoding, self.chain))
        return {"context": self._ctx(_commitment(cfg)), "value": values}

    def get_balance(self, params: list[Any]) -> dict[str, Any]:
        key = _pubkey(params)
        cfg = _cfg(params, 1)
        return {
            "context": self._ctx(_commitment(cfg)),
            "value": acct.lamports if (acct := self.chain.account_at(key, _commitment(cfg))) else 0,
        }

    def request_airdrop(self, params: list[Any]) -> str:
        key = _pubkey(params)
        if len(params) < 2 or not isinstance(params[1], int) or params[1] <= 0:
            raise _invalid("Invalid params: lamports")
        return self.chain.airdrop(Pubkey.from_string(key), params[1])

    def rent_exemption(self, params: list[Any]) -> int:
        size = params[0] if params and isinstance(params[0], int) else 0
        return int(self.chain.svm.minimum_balance_for_rent_exemption(size))
