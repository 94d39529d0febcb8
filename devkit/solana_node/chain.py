"""The ledger behind the local node: LiteSVM plus slots, commitment and history.

LiteSVM executes transactions against the real SPL Token program but keeps
no notion of slots, forks or finality. This module adds them:

* every landed transaction gets a slot of its own; ``advance()`` adds empty
  slots (the CLI does it on a timer);
* ``confirmed`` is the newest slot, ``finalized`` trails it by
  ``finality_depth`` slots; history queries at ``finalized`` never see newer
  slots;
* ``drop_slots(slot)`` abandons every not-yet-finalized slot from ``slot`` on
  (a dropped fork): their transactions vanish from history and the accounts
  they touched are restored to their earlier state;
* signatures are deduplicated here and blockhashes checked against the last
  150 slots, like a validator (LiteSVM's own checks are off).

History (signatures, transactions, slots, blockhashes) honours the
commitment; so do account reads (``account_at``): at ``finalized`` an account
is shown as it was before the oldest unfinalized transaction that touched it.
Signature statuses report every landed transaction with its own
``confirmationStatus``, as a node does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from solders.account import Account
from solders.hash import Hash
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata

from devkit.solana_node import layouts, parse, rebuild

BLOCKHASH_WINDOW = 150
SYSTEM_PROGRAM = Pubkey.from_string(parse.SYSTEM)


class SendError(Exception):
    """sendTransaction refused the transaction (preflight)."""

    def __init__(self, message: str, err: Any, logs: list[str] | None = None, units: int = 0):
        super().__init__(message)
        self.err = err
        self.logs = logs
        self.units = units


@dataclass
class TxRecord:
    signature: str
    slot: int
    block_time: int
    tx: VersionedTransaction
    keys: list[str]
    writable: list[bool]
    signer: list[bool]
    lookup_count: int
    err: Any
    fee: int
    units: int
    logs: list[str]
    inner: list[list[Any]]
    pre_balances: list[int]
    post_balances: list[int]
    pre_tokens: list[dict[str, Any]]
    post_tokens: list[dict[str, Any]]
    undo: dict[str, Account | None]
    memo: str | None


@dataclass
class Block:
    slot: int
    parent: int
    blockhash: str
    block_time: int
    txs: list[TxRecord] = field(default_factory=list)


Listener = Callable[[str, Any], None]


class Chain:
    """LiteSVM with slots, commitment levels, history and dropped forks."""

    def __init__(self, finality_depth: int = 2) -> None:
        self.svm = LiteSVM().with_blockhash_check(False).with_transaction_history(0)
        self.finality_depth = finality_depth
        self.tip = 0
        self.finalized = 0
        self.genesis_time = int(time.time())
        self.blocks: dict[int, Block] = {}
        self.by_sig: dict[str, TxRecord] = {}
        self.by_address: dict[str, list[TxRecord]] = {}
        self.token_accounts: set[str] = set()
        self.airdrops: dict[str, int] = {}
        self.listeners: list[Listener] = []
        # getTransaction renders token balances without ``owner``, as old answers do
        self.old_balances = False
        self._new_block(0, 0)

    # ---- slots -------------------------------------------------------------

    def _new_block(self, slot: int, parent: int) -> Block:
        self.svm.warp_to_slot(slot)
        self.svm.expire_blockhash()
        block = Block(slot, parent, str(self.svm.latest_blockhash()), int(time.time()))
        self.blocks[slot] = block
        return block

    def _parent_of_next(self) -> int:
        return max(s for s in self.blocks)

    def advance(self, slots: int = 1) -> None:
        """Add empty slots (time passing); finalization follows."""
        for _ in range(slots):
            parent = self._parent_of_next()
            self.tip += 1
            self._new_block(self.tip, parent)
            self._emit("slot", self.tip)
        self._settle()

    def finalize_all(self) -> None:
        """Advance until every landed slot is finalized."""
        self.advance(self.finality_depth)

    def _settle(self) -> None:
        target = max(self.finalized, self.tip - self.finality_depth)
        while self.finalized < target:
            self.finalized += 1
            if self.finalized in self.blocks:
                self._emit("finalized", self.blocks[self.finalized])

    def drop_slots(self, from_slot: int) -> list[str]:
        """Abandon every slot >= from_slot (a dropped fork); returns the signatures lost."""
        if from_slot <= self.finalized:
            raise ValueError(f"slot {from_slot} is already finalized ({self.finalized})")
        lost: list[str] = []
        for slot in sorted((s for s in self.blocks if s >= from_slot), reverse=True):
            block = self.blocks.pop(slot)
            for rec in reversed(block.txs):
                for key, acct in rec.undo.items():
                    self._restore(key, acct)
                del self.by_sig[rec.signature]
                for key in set(rec.keys):
                    self.by_address[key].remove(rec)
                lost.append(rec.signature)
        return lost

    def _restore(self, key: str, acct: Account | None) -> None:
        if acct is None:
            acct = Account(lamports=0, data=b"", owner=SYSTEM_PROGRAM, executable=False)
        self.svm.set_account(Pubkey.from_string(key), acct)

    def bound(self, commitment: str | None) -> int:
        """Newest slot visible at this commitment (default finalized, like a node)."""
        return self.finalized if (commitment or "finalized") == "finalized" else self.tip

    def status_of(self, slot: int) -> str:
        return "finalized" if slot <= self.finalized else "confirmed"

    def recent_blockhashes(self) -> dict[str, int]:
        slots = sorted(self.blocks)[-BLOCKHASH_WINDOW:]
        return {self.blocks[s].blockhash: s for s in slots}

    def latest_block(self, commitment: str | None) -> Block:
        bound = self.bound(commitment)
        return self.blocks[max(s for s in self.blocks if s <= bound)]

    # ---- transactions --------------------------------------------------------

    def _emit(self, kind: str, payload: Any) -> None:
        for listener in list(self.listeners):
            listener(kind, payload)

    def _keys(self, tx: VersionedTransaction) -> tuple[list[str], list[bool], list[bool], int]:
        msg = tx.message
        static = [str(k) for k in msg.account_keys]
        header = msg.header
        nsig = header.num_required_signatures
        ro_signed = header.num_readonly_signed_accounts
        ro_unsigned = header.num_readonly_unsigned_accounts
        signer = [i < nsig for i in range(len(static))]
        writable = [
            (i < nsig - ro_signed) if i < nsig else (i < len(static) - ro_unsigned)
            for i in range(len(static))
        ]
        programs = {ix.program_id_index for ix in msg.instructions}
        writable = [w and i not in programs for i, w in enumerate(writable)]
        loaded_w: list[str] = []
        loaded_r: list[str] = []
        for lookup in getattr(msg, "address_table_lookups", []) or []:
            table = self.svm.get_account(lookup.account_key)
            if table is None:
                raise SendError("address lookup table not found", "AddressLookupTableNotFound")
            addrs = bytes(table.data)[56:]
            for idx in lookup.writable_indexes:
                loaded_w.append(parse.b58encode(addrs[idx * 32 : idx * 32 + 32]))
            for idx in lookup.readonly_indexes:
                loaded_r.append(parse.b58encode(addrs[idx * 32 : idx * 32 + 32]))
        keys = static + loaded_w + loaded_r
        signer += [False] * (len(loaded_w) + len(loaded_r))
        writable += [True] * len(loaded_w) + [False] * len(loaded_r)
        return keys, writable, signer, len(loaded_w) + len(loaded_r)

    def _token_balances(self, keys: list[str], accts: list[Account | None]) -> list[dict[str, Any]]:
        out = []
        for i, acct in enumerate(accts):
            if acct is None or not layouts.is_token_program(acct.owner):
                continue
            decoded = layouts.decode_token_account(bytes(acct.data))
            if decoded is None:
                continue
            mint, owner, amount, _ = decoded
            mint_acct = self.svm.get_account(Pubkey.from_string(mint))
            mint_info = layouts.decode_mint(bytes(mint_acct.data)) if mint_acct else None
            decimals = mint_info["decimals"] if mint_info else 0
            out.append(
                {
                    "accountIndex": i,
                    "mint": mint,
                    "owner": owner,
                    "programId": str(acct.owner),
                    "uiTokenAmount": parse.ui_amount(amount, decimals),
                }
            )
            self.token_accounts.add(keys[i])
        return out

    def submit(self, raw: bytes | VersionedTransaction, *, preflight: bool = True) -> str:
        """Land a transaction in a new slot; returns its signature (SendError when refused)."""
        tx = raw if isinstance(raw, VersionedTransaction) else VersionedTransaction.from_bytes(raw)
        sig = str(tx.signatures[0])
        if sig in self.by_sig:
            if preflight:
                raise SendError("This transaction has already been processed", "AlreadyProcessed")
            return sig
        if str(tx.message.recent_blockhash) not in self.recent_blockhashes():
            if preflight:
                raise SendError("Blockhash not found", "BlockhashNotFound")
            return sig  # never lands, like a real expired transaction
        keys, writable, signer, lookups = self._keys(tx)
        pre = [self.svm.get_account(Pubkey.from_string(k)) for k in keys]
        pre_tokens = self._token_balances(keys, pre)
        parent = self._parent_of_next()
        slot = self.tip + 1
        self.svm.warp_to_slot(slot)
        result = self.svm.send_transaction(tx)
        err = (
            json.loads(result.to_json())["err"]
            if isinstance(result, FailedTransactionMetadata)
            else None
        )
        meta = result.meta() if isinstance(result, FailedTransactionMetadata) else result
        landed = err is None or (isinstance(err, dict) and "InstructionError" in err)
        if err is not None and (preflight or not landed):
            for key, acct in zip(keys, pre, strict=True):
                self._restore(key, acct)
            if preflight:
                raise SendError(
                    _describe(err), err, list(meta.logs()), meta.compute_units_consumed()
                )
            return sig
        post = [self.svm.get_account(Pubkey.from_string(k)) for k in keys]
        self.tip = slot
        block = self._new_block(slot, parent)
        rec = TxRecord(
            signature=sig,
            slot=slot,
            block_time=block.block_time,
            tx=tx,
            keys=keys,
            writable=writable,
            signer=signer,
            lookup_count=lookups,
            err=err,
            fee=_fee(tx, meta),
            units=meta.compute_units_consumed(),
            logs=list(meta.logs()),
            inner=[list(x) for x in meta.inner_instructions()],
            pre_balances=[a.lamports if a else 0 for a in pre],
            post_balances=[a.lamports if a else 0 for a in post],
            pre_tokens=pre_tokens,
            post_tokens=self._token_balances(keys, post),
            undo=dict(zip(keys, pre, strict=True)),
            memo=_memo(tx, keys),
        )
        block.txs.append(rec)
        self.by_sig[sig] = rec
        for key in dict.fromkeys(keys):
            self.by_address.setdefault(key, []).append(rec)
        self._emit("slot", slot)
        self._emit("tx", rec)
        self._settle()
        return sig

    def simulate(
        self, tx: VersionedTransaction, *, sig_verify: bool = True, replace_blockhash: bool = False
    ) -> dict[str, Any]:
        """Run a transaction against the newest state without landing it (simulateTransaction).

        As the JSON-RPC says: ``sig_verify`` off runs it unsigned (what clients estimating
        compute units send); ``replace_blockhash`` runs it under the newest confirmed
        blockhash, returned as ``replacementBlockhash``.
        """
        replacement = None
        if replace_blockhash:
            block = self.latest_block("confirmed")
            tx = rebuild.with_blockhash(tx, Hash.from_string(block.blockhash))
            replacement = {
                "blockhash": block.blockhash,
                "lastValidBlockHeight": block.slot + BLOCKHASH_WINDOW,
            }
        elif str(tx.message.recent_blockhash) not in self.recent_blockhashes():
            return {"err": "BlockhashNotFound", "logs": [], "unitsConsumed": 0}
        if str(tx.signatures[0]) in self.by_sig:
            return {"err": "AlreadyProcessed", "logs": [], "unitsConsumed": 0}
        # LiteSVM's switch is on the instance: off for this call only, on again after.
        self.svm.with_sigverify(sig_verify)
        try:
            result = self.svm.simulate_transaction(tx)
        finally:
            self.svm.with_sigverify(True)
        if isinstance(result, FailedTransactionMetadata):
            meta = result.meta()
            err = json.loads(result.to_json())["err"]
        else:
            meta, err = result.meta(), None
        units = meta.compute_units_consumed()
        value = {"err": err, "logs": list(meta.logs()), "unitsConsumed": units}
        value["replacementBlockhash"] = replacement
        return value

    def airdrop(self, pubkey: Pubkey, lamports: int) -> str:
        result = self.svm.airdrop(pubkey, lamports)
        meta = result.meta() if isinstance(result, FailedTransactionMetadata) else result
        sig = str(meta.signature())
        self.airdrops[sig] = self.tip
        return sig

    # ---- queries -------------------------------------------------------------

    def signatures_for(
        self,
        address: str,
        commitment: str | None,
        before: str | None = None,
        until: str | None = None,
        limit: int = 1000,
    ) -> list[TxRecord]:
        bound = self.bound(commitment)
        out: list[TxRecord] = []
        started = before is None
        for rec in reversed(self.by_address.get(address, [])):
            if rec.slot > bound:
                continue
            if not started:
                started = rec.signature == before
                continue
            if rec.signature == until:
                break
            out.append(rec)
            if len(out) >= limit:
                break
        return out

    def transaction(self, signature: str, commitment: str | None) -> TxRecord | None:
        rec = self.by_sig.get(signature)
        if rec is None or rec.slot > self.bound(commitment):
            return None
        return rec

    def account_at(self, key: str, commitment: str | None) -> Account | None:
        """An account as of the commitment's slot: at ``finalized``, the state before the
        oldest not-yet-finalized transaction that touched it."""
        if self.bound(commitment) < self.tip:
            for slot in sorted(s for s in self.blocks if s > self.finalized):
                for rec in self.blocks[slot].txs:
                    if key in rec.undo:
                        acct = rec.undo[key]
                        return acct if acct is not None and acct.lamports > 0 else None
        acct = self.svm.get_account(Pubkey.from_string(key))
        return acct if acct is not None and (acct.lamports > 0 or bytes(acct.data)) else None

    def token_accounts_of(
        self,
        owner: str,
        mint: str | None = None,
        program: str | None = None,
        commitment: str | None = "confirmed",
    ) -> list[tuple[str, Account]]:
        out = []
        for key in sorted(self.token_accounts):
            acct = self.account_at(key, commitment)
            if acct is None or not layouts.is_token_program(acct.owner):
                continue
            decoded = layouts.decode_token_account(bytes(acct.data))
            if decoded is None or decoded[1] != owner:
                continue
            if (mint and decoded[0] != mint) or (program and str(acct.owner) != program):
                continue
            out.append((key, acct))
        return out


def _fee(tx: VersionedTransaction, meta: Any) -> int:
    """The fee charged: LiteSVM reports it from solders 0.28 on; before, the fee payer's base
    fee of 5000 lamports per signature (the tests set no meaningful priority fee)."""
    if hasattr(meta, "fee"):
        return int(meta.fee())
    return 5_000 * tx.message.header.num_required_signatures


def _describe(err: Any) -> str:
    if isinstance(err, dict) and "InstructionError" in err:
        index, inner = err["InstructionError"]
        if isinstance(inner, dict) and "Custom" in inner:
            return (
                f"Error processing Instruction {index}: custom program error: {inner['Custom']:#x}"
            )
        return f"Error processing Instruction {index}: {inner}"
    return str(err)


def _memo(tx: VersionedTransaction, keys: list[str]) -> str | None:
    """The ``memo`` field of getSignaturesForAddress: ``[len] text`` joined by ``; ``."""
    memos = []
    for ix in tx.message.instructions:
        if keys[ix.program_id_index] in (parse.MEMO, parse.MEMO_V1):
            text = bytes(ix.data).decode("utf-8", "replace")
            memos.append(f"[{len(bytes(ix.data))}] {text}")
    return "; ".join(memos) if memos else None
