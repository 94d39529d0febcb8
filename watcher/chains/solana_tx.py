"""Reading one Solana transaction (a ``getTransaction`` result): what moved, to whom.

The rule (issue 4): a payment is the *increase* of a token account's balance in
a successful transaction, ``postTokenBalances - preTokenBalances`` for that
account, where the mint is the configured USDC mint and the account's owner is
our receiving wallet. Balance deltas cover ``transfer``, ``transferChecked``,
transfers made by other programs through CPI and a recipient account created
in the same transaction; adding up transfer instructions would not (a swap
routes USDC in and out of the same account).

Pure functions, no I/O: the follower, ``watcher explain`` and the unit tests
share them. Works on ``jsonParsed`` and ``json`` encodings, legacy and v0
transactions, and old answers whose token balances carry no ``owner``: such an
owner stays unknown here (today's owner says nothing about a past transaction);
:mod:`solana_owners` decides from the account's history who owned it then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from watcher.chains import solana_owners
from watcher.keys import b58decode

TOKEN_PROGRAMS = frozenset(
    {"TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA", "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb"}
)
MEMO_PROGRAMS = frozenset(
    {"MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr", "Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo"}
)
# SPL Token instruction tags -> (type, index of the destination, index of the authority)
_TRANSFER_LAYOUT = {3: ("transfer", 1, 2), 12: ("transferChecked", 2, 3)}


class MalformedTransaction(ValueError):
    """The answer is not a getTransaction result we can read."""


@dataclass(frozen=True, slots=True)
class BalanceChange:
    """One token account's balance change in a transaction."""

    account_index: int
    account: str
    mint: str
    pre_owner: str | None  # None: not a token account before, or the answer does not say
    post_owner: str | None
    pre: int
    post: int
    in_pre: bool = True  # a token account before the transaction (else created in it)
    in_post: bool = True  # still one after (else closed in it)

    @property
    def owner(self) -> str | None:
        """The owner the answer shows (after, else before); None in the old format."""
        return self.post_owner or self.pre_owner

    @property
    def delta(self) -> int:
        return self.post - self.pre


@dataclass(frozen=True, slots=True)
class TransferIx:
    """A transfer / transferChecked instruction (outer or inner), as written."""

    kind: str
    source: str
    destination: str
    amount: int
    mint: str | None
    references: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TxView:
    """Everything the follower and explain need from one transaction."""

    signature: str
    slot: int
    block_time: int | None
    failed: bool
    error: Any
    account_keys: tuple[str, ...]
    changes: tuple[BalanceChange, ...]
    transfers: tuple[TransferIx, ...]
    memo: str | None
    signers: frozenset[str] = field(default_factory=frozenset)
    owner_events: tuple[solana_owners.OwnerEvent, ...] = ()

    def change_of(self, account: str) -> BalanceChange | None:
        return next((c for c in self.changes if c.account == account), None)

    def payer_for(self, mint: str) -> str | None:
        """The owner whose balance of ``mint`` went down the most (None if none did)."""
        downs = [c for c in self.changes if c.mint == mint and c.delta < 0 and c.owner]
        if not downs:
            return None
        return min(downs, key=lambda c: (c.delta, c.account_index)).owner

    def references_for(self, account: str) -> tuple[str, ...]:
        """Solana Pay reference keys on the transfers into ``account``."""
        out: list[str] = []
        for t in self.transfers:
            if t.destination == account:
                out.extend(r for r in t.references if r not in out)
        return tuple(out)


@dataclass(frozen=True, slots=True)
class Payment:
    """An increase of one of our USDC token accounts."""

    signature: str
    slot: int
    block_time: int | None
    account_index: int
    token_account: str
    mint: str
    owner: str
    payer: str | None
    amount: int
    memo: str | None
    references: tuple[str, ...]
    # The transaction's fee payer (its first account key): screened as ``fee_payer``.
    fee_payer: str | None = None


def unwrap(answer: Any) -> dict[str, Any]:
    """The ``result`` of a getTransaction answer, bare or in a JSON-RPC envelope."""
    if isinstance(answer, dict) and "jsonrpc" in answer:
        if answer.get("error"):
            raise MalformedTransaction(f"the answer is a JSON-RPC error: {answer['error']}")
        answer = answer.get("result")
    if not isinstance(answer, dict) or "transaction" not in answer or "meta" not in answer:
        raise MalformedTransaction("not a getTransaction result (no transaction/meta)")
    if answer["meta"] is None:
        raise MalformedTransaction("the transaction has no status metadata (meta is null)")
    return answer


def _keys(result: dict[str, Any]) -> tuple[list[str], set[str]]:
    msg = result["transaction"]["message"]
    keys: list[str] = []
    signers: set[str] = set()
    for i, k in enumerate(msg.get("accountKeys") or []):
        if isinstance(k, dict):
            keys.append(str(k["pubkey"]))
            if k.get("signer"):
                signers.add(str(k["pubkey"]))
        else:
            keys.append(str(k))
            header = msg.get("header") or {}
            if i < int(header.get("numRequiredSignatures", 1)):
                signers.add(str(k))
    loaded = result["meta"].get("loadedAddresses") or {}
    if loaded and not any(isinstance(k, dict) for k in msg.get("accountKeys") or []):
        keys += [str(k) for k in loaded.get("writable") or []]
        keys += [str(k) for k in loaded.get("readonly") or []]
    return keys, signers


def _balances(entries: Any, keys: list[str]) -> dict[int, tuple[str, str | None, int]]:
    out: dict[int, tuple[str, str | None, int]] = {}
    for e in entries or []:
        idx = int(e["accountIndex"])
        owner = e.get("owner")  # absent in old answers: unknown, never guessed
        out[idx] = (
            str(e["mint"]),
            str(owner) if owner else None,
            int(e["uiTokenAmount"]["amount"]),
        )
    return out


def balance_changes(result: dict[str, Any]) -> list[BalanceChange]:
    """Per token account: pre and post balance (0 when created or closed in the transaction)."""
    keys, _ = _keys(result)
    pre = _balances(result["meta"].get("preTokenBalances"), keys)
    post = _balances(result["meta"].get("postTokenBalances"), keys)
    out = []
    for idx in sorted(set(pre) | set(post)):
        mint = (post.get(idx) or pre[idx])[0]
        out.append(
            BalanceChange(
                account_index=idx,
                account=keys[idx] if idx < len(keys) else "",
                mint=mint,
                pre_owner=pre[idx][1] if idx in pre else None,
                post_owner=post[idx][1] if idx in post else None,
                pre=pre[idx][2] if idx in pre else 0,
                post=post[idx][2] if idx in post else 0,
                in_pre=idx in pre,
                in_post=idx in post,
            )
        )
    return out


def _instructions(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Outer instructions, each followed by its inner ones: the order they executed in."""
    inner: dict[int, list[dict[str, Any]]] = {}
    for group in result["meta"].get("innerInstructions") or []:
        inner.setdefault(int(group.get("index", 0)), []).extend(group.get("instructions") or [])
    out: list[dict[str, Any]] = []
    for i, ix in enumerate(result["transaction"]["message"].get("instructions") or []):
        out.append(ix)
        out.extend(inner.pop(i, []))
    for rest in inner.values():  # an index past the outer list: keep it, order unknown
        out.extend(rest)
    return out


def _transfer(ix: dict[str, Any], keys: list[str], signers: set[str]) -> TransferIx | None:
    program = ix.get("programId") or (
        keys[ix["programIdIndex"]] if "programIdIndex" in ix else None
    )
    if program not in TOKEN_PROGRAMS:
        return None
    parsed = ix.get("parsed")
    if isinstance(parsed, dict):
        kind, info = parsed.get("type"), parsed.get("info") or {}
        if kind not in ("transfer", "transferChecked"):
            return None
        amount = info.get("amount") or (info.get("tokenAmount") or {}).get("amount") or 0
        # jsonParsed names trailing accounts "signers" (multisig); read-only non-signers among
        # them are Solana Pay references.
        refs = tuple(s for s in info.get("signers") or [] if s not in signers)
        return TransferIx(
            str(kind),
            str(info.get("source")),
            str(info.get("destination")),
            int(amount),
            info.get("mint"),
            refs,
        )
    try:
        data = b58decode(str(ix.get("data") or ""))
    except ValueError:
        return None
    if not data or data[0] not in _TRANSFER_LAYOUT or len(data) < 9:
        return None
    kind, dest_at, auth_at = _TRANSFER_LAYOUT[data[0]]
    accounts = [a if isinstance(a, str) else keys[a] for a in ix.get("accounts") or []]
    if len(accounts) <= auth_at:
        return None
    return TransferIx(
        kind,
        accounts[0],
        accounts[dest_at],
        int.from_bytes(data[1:9], "little"),
        accounts[1] if kind == "transferChecked" else None,
        tuple(a for a in accounts[auth_at + 1 :] if a not in signers),
    )


def _memo(ix: dict[str, Any], keys: list[str]) -> str | None:
    program = ix.get("programId") or (
        keys[ix["programIdIndex"]] if "programIdIndex" in ix else None
    )
    if program not in MEMO_PROGRAMS:
        return None
    if isinstance(ix.get("parsed"), str):
        return str(ix["parsed"])
    try:
        return b58decode(str(ix.get("data") or "")).decode("utf-8", "replace")
    except ValueError:
        return None


def view(answer: Any) -> TxView:
    """Read a getTransaction answer (bare or enveloped) into a :class:`TxView`."""
    result = unwrap(answer)
    try:
        keys, signers = _keys(result)
        ixs = _instructions(result)
        transfers = tuple(t for ix in ixs if (t := _transfer(ix, keys, signers)) is not None)
        memos = [m for ix in ixs if (m := _memo(ix, keys)) is not None]
        sigs = result["transaction"].get("signatures") or [""]
        err = result["meta"].get("err")
        return TxView(
            signature=str(sigs[0]),
            slot=int(result.get("slot") or 0),
            block_time=result.get("blockTime"),
            failed=err is not None,
            error=err,
            account_keys=tuple(keys),
            changes=tuple(balance_changes(result)),
            transfers=transfers,
            memo="; ".join(memos) if memos else None,
            signers=frozenset(signers),
            owner_events=tuple(
                e for ix in ixs if (e := solana_owners.owner_event(ix, keys)) is not None
            ),
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise MalformedTransaction(f"unreadable getTransaction result: {exc!r}") from exc


def payments(tx: TxView, owner: str, mint: str, before: str | None = None) -> list[Payment]:
    """The payments to ``owner`` in ``mint`` (empty for a failed transaction).

    A balance counts only if the account was ``owner``'s when it moved
    (:func:`solana_owners.judge`); ``before`` is who owned the accounts before the
    transaction as far as their history says (None: unknown).
    """
    return [
        payment(tx, c, owner)
        for c in tx.changes
        if c.mint == mint and c.delta > 0 and solana_owners.judge(tx, c, owner, before).ours
    ]


def payment(tx: TxView, c: BalanceChange, owner: str) -> Payment:
    """The increase of ``c`` as a payment to ``owner`` (the caller judged it ours)."""
    return Payment(
        signature=tx.signature,
        slot=tx.slot,
        block_time=tx.block_time,
        account_index=c.account_index,
        token_account=c.account,
        mint=c.mint,
        owner=owner,
        payer=tx.payer_for(c.mint),
        amount=c.delta,
        memo=tx.memo,
        references=tx.references_for(c.account),
        fee_payer=tx.account_keys[0] if tx.account_keys else None,
    )
