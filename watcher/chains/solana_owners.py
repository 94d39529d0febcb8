"""Whose was a token account when its balance moved? (issue 11)

A token account's owner can change: ``SetAuthority`` (AccountOwner) hands it to
another wallet, and a closed account can be opened again. Deposits made while
someone else owned an account are not payments to us, even if it is ours
today. So the owner at the time comes from the transaction itself, or from the
account's history as the follower walked it, never from today's state:

1. A transaction that changes the account's owner (``SetAuthority``
   AccountOwner on it) credits nothing to that account: a deposit made around a
   handover is the previous owner's business.
2. Modern answers carry ``owner`` in ``preTokenBalances`` and
   ``postTokenBalances``: both must be ours (an account created in the
   transaction has no "before"; its "after" must be ours).
3. Old answers carry no ``owner``: the owner before the transaction is the one
   the history walk established (``before``: set by an ``InitializeAccount*`` or
   a ``SetAuthority`` the follower read in an earlier transaction of the
   account, or by a modern answer's balances); the owner after applies this
   transaction's own instructions. Unknown means not ours.

Pure functions; the follower keeps ``before`` per account in
``solana_account_owners`` (moved with the account's cursor), explain has no
history and passes None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from solders.pubkey import Pubkey

from watcher.keys import b58decode

TOKEN_PROGRAMS = frozenset(
    {"TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA", "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb"}
)
_INIT_TYPES = ("initializeAccount", "initializeAccount2", "initializeAccount3")
_ACCOUNT_OWNER = 2  # SPL Token AuthorityType::AccountOwner


@dataclass(frozen=True, slots=True)
class OwnerEvent:
    """An instruction that sets who owns a token account, in execution order."""

    kind: str  # "init" (InitializeAccount*), "set_owner" (SetAuthority AccountOwner), "close"
    account: str
    owner: str | None


class BalanceChange(Protocol):
    """What the judgement reads of a balance change (``solana_tx.BalanceChange``); named
    here because solana_tx calls this module, so this one cannot import it back."""

    @property
    def account(self) -> str: ...

    @property
    def pre_owner(self) -> str | None: ...

    @property
    def post_owner(self) -> str | None: ...

    @property
    def in_pre(self) -> bool: ...

    @property
    def in_post(self) -> bool: ...


class TxView(Protocol):
    """What the judgement reads of a transaction (``solana_tx.TxView``)."""

    @property
    def failed(self) -> bool: ...

    @property
    def owner_events(self) -> Sequence[OwnerEvent]: ...

    def change_of(self, account: str) -> BalanceChange | None: ...


@dataclass(frozen=True, slots=True)
class Judgement:
    """Whether a balance increase was ours when it happened, and if not, why."""

    ours: bool
    reason: str | None = None


def _parsed_event(ix: dict[str, Any]) -> OwnerEvent | None:
    parsed = ix.get("parsed")
    if not isinstance(parsed, dict):
        return None
    kind, info = parsed.get("type"), parsed.get("info") or {}
    if kind in _INIT_TYPES:
        return OwnerEvent("init", str(info.get("account")), str(info.get("owner")))
    if kind == "setAuthority" and info.get("authorityType") == "accountOwner":
        new = info.get("newAuthority")
        return OwnerEvent("set_owner", str(info.get("account")), str(new) if new else None)
    if kind == "closeAccount":
        return OwnerEvent("close", str(info.get("account")), None)
    return None


def _raw_event(data: bytes, accounts: list[str]) -> OwnerEvent | None:
    if not data or not accounts:
        return None
    tag = data[0]
    if tag == 1 and len(accounts) >= 3:  # InitializeAccount: account, mint, owner, rent
        return OwnerEvent("init", accounts[0], accounts[2])
    if tag in (16, 18) and len(data) >= 33:  # InitializeAccount2/3: owner in the data
        return OwnerEvent("init", accounts[0], str(Pubkey.from_bytes(data[1:33])))
    if tag == 6 and len(data) >= 3 and data[1] == _ACCOUNT_OWNER:  # SetAuthority
        new = str(Pubkey.from_bytes(data[3:35])) if data[2] == 1 and len(data) >= 35 else None
        return OwnerEvent("set_owner", accounts[0], new)
    if tag == 9:  # CloseAccount
        return OwnerEvent("close", accounts[0], None)
    return None


def owner_event(ix: dict[str, Any], keys: list[str]) -> OwnerEvent | None:
    """The owner change an instruction makes (jsonParsed or json encoding), if any."""
    program = ix.get("programId") or (
        keys[ix["programIdIndex"]] if "programIdIndex" in ix else None
    )
    if program not in TOKEN_PROGRAMS:
        return None
    if "parsed" in ix:
        return _parsed_event(ix)
    try:
        data = b58decode(str(ix.get("data") or ""))
    except ValueError:
        return None
    accounts = [a if isinstance(a, str) else keys[a] for a in ix.get("accounts") or []]
    return _raw_event(data, accounts)


def owner_after(tx: TxView, account: str, before: str | None) -> str | None:
    """Who owns ``account`` after ``tx``, given who owned it before (None: unknown)."""
    if tx.failed:
        return before  # a failed transaction changed nothing
    change = tx.change_of(account)
    if change is not None and change.in_post and change.post_owner:
        return change.post_owner  # the answer says so: nothing to infer
    if change is not None and change.in_pre and not change.in_post:
        return None  # closed in the transaction
    owner = change.pre_owner if change is not None and change.pre_owner else before
    for e in tx.owner_events:
        if e.account == account:
            owner = e.owner
    return owner


def judge(tx: TxView, change: BalanceChange, ours: str, before: str | None) -> Judgement:
    """Was ``change`` (an increase) an increase of an account ``ours`` owned at the time?"""
    if tx.failed:
        return Judgement(False, "the transaction failed")
    handovers = [e for e in tx.owner_events if e.account == change.account]
    moved = [e for e in handovers if e.kind == "set_owner"]
    if moved:
        return Judgement(
            False,
            f"the account's owner changed in this transaction (SetAuthority to {moved[-1].owner}):"
            " a balance moved around a handover is not a payment to us",
        )
    if change.in_pre:
        then = change.pre_owner or before
        if then is None:
            return Judgement(
                False,
                "the transaction's balances do not name the account's owner and the account's "
                "history read so far does not show it was ours then",
            )
        if then != ours:
            return Judgement(False, f"the account belonged to {then} then, not to {ours}")
    after = owner_after(tx, change.account, before)
    if after != ours:
        shown = after or "an unknown owner"
        return Judgement(False, f"the account belonged to {shown} after this transaction")
    return Judgement(True)
