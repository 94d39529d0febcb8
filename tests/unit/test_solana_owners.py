"""Whose was an account when its balance moved: the rule on a recorded mainnet payment."""

from __future__ import annotations

import copy
from typing import Any

from tests import fixtures
from watcher.chains import solana_owners, solana_tx

USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
RECEIVER = "B2v68t8MXb9zUms1VQKuCcvjrjKDK6fLd8ZngqmBGy1M"
ATTACKER = "3V9bd3EN5aNuhE4RiHGbZ1eZakJ1F9cDb8V4YLjCG8cg"


def answer(*, old: bool = False, handover_to: str | None = None) -> dict[str, Any]:
    """The durable-nonce payment; ``old``: balances without owner; ``handover_to``: a
    SetAuthority(AccountOwner) on the receiving account appended to the transaction."""
    doc = copy.deepcopy(fixtures.load_solana_fixture(fixtures.DURABLE_NONCE))
    result = doc.get("result", doc)
    if old:
        for side in ("preTokenBalances", "postTokenBalances"):
            for b in result["meta"][side]:
                b.pop("owner", None)
                b.pop("programId", None)
    if handover_to is not None:
        result["transaction"]["message"]["instructions"].append(
            {
                "parsed": {
                    "info": {
                        "account": receiving(doc),
                        "authority": ATTACKER,
                        "authorityType": "accountOwner",
                        "newAuthority": handover_to,
                    },
                    "type": "setAuthority",
                },
                "program": "spl-token",
                "programId": "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",
                "stackHeight": None,
            }
        )
    return doc


def receiving(doc: Any) -> str:
    tx = solana_tx.view(doc)
    return next(c.account for c in tx.changes if c.mint == USDC and c.delta > 0)


def test_modern_answer_names_the_owner_then() -> None:
    tx = solana_tx.view(answer())
    (change,) = [c for c in tx.changes if c.mint == USDC and c.delta > 0]
    assert solana_owners.judge(tx, change, RECEIVER, None).ours
    assert not solana_owners.judge(tx, change, ATTACKER, RECEIVER).ours  # history cannot override


def test_old_answer_counts_only_with_history_saying_it_was_ours() -> None:
    tx = solana_tx.view(answer(old=True))
    (change,) = [c for c in tx.changes if c.mint == USDC and c.delta > 0]
    assert change.owner is None
    unknown = solana_owners.judge(tx, change, RECEIVER, None)
    assert not unknown.ours and "do not name the account's owner" in str(unknown.reason)
    theirs = solana_owners.judge(tx, change, RECEIVER, ATTACKER)
    assert not theirs.ours and ATTACKER in str(theirs.reason)
    assert solana_owners.judge(tx, change, RECEIVER, RECEIVER).ours
    assert solana_tx.payments(tx, RECEIVER, USDC) == []
    assert len(solana_tx.payments(tx, RECEIVER, USDC, before=RECEIVER)) == 1


def test_a_handover_transaction_credits_nothing_and_moves_the_owner() -> None:
    for old in (False, True):
        tx = solana_tx.view(answer(old=old, handover_to=RECEIVER))
        (change,) = [c for c in tx.changes if c.mint == USDC and c.delta > 0]
        verdict = solana_owners.judge(tx, change, RECEIVER, RECEIVER)
        assert not verdict.ours and "SetAuthority" in str(verdict.reason)
    tx = solana_tx.view(answer(old=True, handover_to=RECEIVER))
    acct = receiving(answer())
    assert solana_owners.owner_after(tx, acct, ATTACKER) == RECEIVER
