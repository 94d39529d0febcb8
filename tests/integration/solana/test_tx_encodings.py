"""The payment rule reads json and jsonParsed answers (legacy and v0) the same way."""

from __future__ import annotations

from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.transaction import VersionedTransaction

from devkit.solana_node import Bank, Chain, render
from watcher.chains import solana_tx


def test_json_and_json_parsed_agree() -> None:
    chain = Chain(finality_depth=2)
    bank = Bank(chain)
    usdc = bank.create_mint(6)
    alice, merchant = bank.wallet(), Keypair().pubkey()
    bank.mint_to(usdc, alice.pubkey(), 10**9)
    refs = [Keypair().pubkey(), Keypair().pubkey()]
    legacy = bank.pay(
        alice, usdc, merchant, 123_456, create_ata=True, memo="order 9", references=refs
    )
    ix = bank.transfer_ix(
        alice, usdc, bank.ata(merchant, usdc), 7_000, checked=False, references=refs[:1]
    )
    blockhash = Hash.from_string(chain.latest_block("confirmed").blockhash)
    v0 = VersionedTransaction(
        MessageV0.try_compile(bank.payer.pubkey(), [ix], [], blockhash), [bank.payer, alice]
    )
    chain.submit(v0)
    expected = {
        legacy: (123_456, "order 9", tuple(str(r) for r in refs)),
        str(v0.signatures[0]): (7_000, None, (str(refs[0]),)),
    }
    for sig, (amount, memo, references) in expected.items():
        for encoding in ("json", "jsonParsed"):
            answer = render.transaction(chain.by_sig[sig], encoding, 0)
            (p,) = solana_tx.payments(solana_tx.view(answer), str(merchant), str(usdc))
            assert (p.amount, p.memo, p.references) == (amount, memo, references), encoding
            assert p.payer == str(alice.pubkey())
