"""Test helpers: build and land real SPL Token transactions on a local node's chain.

Everything goes through :meth:`chain.Chain.submit`, the same path
``sendTransaction`` takes, so the transactions are real ones (signed, executed
by the SPL Token program, with fees and logs).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account
from solders.token.associated import get_associated_token_address
from solders.transaction import Transaction, VersionedTransaction

from devkit.solana_node import chain, parse

MEMO_PROGRAM = Pubkey.from_string(parse.MEMO)
TOKEN_PROGRAM_ID = Pubkey.from_string(parse.TOKEN)
ATA_PROGRAM_ID = Pubkey.from_string(parse.ATA)
SYSTEM_PROGRAM_ID = Pubkey.from_string(parse.SYSTEM)
RENT_SYSVAR = Pubkey.from_string("SysvarRent111111111111111111111111111111111")
MINT_SIZE = 82
SOL = 1_000_000_000


def _token_ix(data: bytes, metas: list[AccountMeta]) -> Instruction:
    return Instruction(TOKEN_PROGRAM_ID, data, metas)


def initialize_mint_ix(mint: Pubkey, decimals: int, authority: Pubkey) -> Instruction:
    data = bytes([0, decimals]) + bytes(authority) + b"\0"
    return _token_ix(data, [AccountMeta(mint, False, True), AccountMeta(RENT_SYSVAR, False, False)])


def initialize_account_ix(account: Pubkey, mint: Pubkey, owner: Pubkey) -> Instruction:
    return _token_ix(
        bytes([1]),
        [
            AccountMeta(account, False, True),
            AccountMeta(mint, False, False),
            AccountMeta(owner, False, False),
            AccountMeta(RENT_SYSVAR, False, False),
        ],
    )


def mint_to_ix(mint: Pubkey, dest: Pubkey, authority: Pubkey, amount: int) -> Instruction:
    return _token_ix(
        bytes([7]) + struct.pack("<Q", amount),
        [
            AccountMeta(mint, False, True),
            AccountMeta(dest, False, True),
            AccountMeta(authority, True, False),
        ],
    )


def transfer_ix(source: Pubkey, dest: Pubkey, owner: Pubkey, amount: int) -> Instruction:
    return _token_ix(
        bytes([3]) + struct.pack("<Q", amount),
        [
            AccountMeta(source, False, True),
            AccountMeta(dest, False, True),
            AccountMeta(owner, True, False),
        ],
    )


def transfer_checked_ix(
    source: Pubkey, mint: Pubkey, dest: Pubkey, owner: Pubkey, amount: int, decimals: int
) -> Instruction:
    return _token_ix(
        bytes([12]) + struct.pack("<QB", amount, decimals),
        [
            AccountMeta(source, False, True),
            AccountMeta(mint, False, False),
            AccountMeta(dest, False, True),
            AccountMeta(owner, True, False),
        ],
    )


def set_account_owner_ix(account: Pubkey, owner: Pubkey, new_owner: Pubkey) -> Instruction:
    """SetAuthority(AccountOwner): hand a token account to another wallet."""
    return _token_ix(
        bytes([6, 2, 1]) + bytes(new_owner),
        [AccountMeta(account, False, True), AccountMeta(owner, True, False)],
    )


def create_ata_ix(
    payer: Pubkey, owner: Pubkey, mint: Pubkey, idempotent: bool = False
) -> Instruction:
    return Instruction(
        ATA_PROGRAM_ID,
        bytes([1]) if idempotent else b"",
        [
            AccountMeta(payer, True, True),
            AccountMeta(get_associated_token_address(owner, mint), False, True),
            AccountMeta(owner, False, False),
            AccountMeta(mint, False, False),
            AccountMeta(SYSTEM_PROGRAM_ID, False, False),
            AccountMeta(TOKEN_PROGRAM_ID, False, False),
        ],
    )


class Bank:
    """A funded fee payer plus shortcuts for mints, token accounts and transfers."""

    def __init__(self, chain_: chain.Chain) -> None:
        self.chain = chain_
        self.payer = Keypair()
        chain_.airdrop(self.payer.pubkey(), 1_000 * SOL)

    # ---- plumbing --------------------------------------------------------------

    def tx(
        self,
        instructions: Sequence[Instruction],
        signers: Sequence[Keypair] = (),
        *,
        fee_payer: Keypair | None = None,
    ) -> VersionedTransaction:
        payer = fee_payer or self.payer
        keys = [payer, *[s for s in signers if s.pubkey() != payer.pubkey()]]
        blockhash = self.chain.latest_block("confirmed").blockhash
        from solders.hash import Hash

        msg = Message.new_with_blockhash(
            list(instructions), payer.pubkey(), Hash.from_string(blockhash)
        )
        return VersionedTransaction.from_legacy(Transaction(keys, msg, Hash.from_string(blockhash)))

    def send(
        self,
        instructions: Sequence[Instruction],
        signers: Sequence[Keypair] = (),
        *,
        fee_payer: Keypair | None = None,
        preflight: bool = True,
    ) -> str:
        return self.chain.submit(
            self.tx(instructions, signers, fee_payer=fee_payer), preflight=preflight
        )

    def wallet(self, sol: int = 10) -> Keypair:
        kp = Keypair()
        self.chain.airdrop(kp.pubkey(), sol * SOL)
        return kp

    # ---- mints and accounts ----------------------------------------------------

    def create_mint(self, decimals: int = 6, authority: Keypair | None = None) -> Pubkey:
        """A new mint (USDC-like with the default 6 decimals); the bank's payer mints."""
        mint = Keypair()
        auth = authority or self.payer
        rent = self.chain.svm.minimum_balance_for_rent_exemption(MINT_SIZE)
        self.send(
            [
                create_account(
                    CreateAccountParams(
                        from_pubkey=self.payer.pubkey(),
                        to_pubkey=mint.pubkey(),
                        lamports=rent,
                        space=MINT_SIZE,
                        owner=TOKEN_PROGRAM_ID,
                    )
                ),
                initialize_mint_ix(mint.pubkey(), decimals, auth.pubkey()),
            ],
            [mint],
        )
        return mint.pubkey()

    def ata(self, owner: Pubkey, mint: Pubkey) -> Pubkey:
        return get_associated_token_address(owner, mint)

    def create_ata_ix(self, owner: Pubkey, mint: Pubkey) -> Instruction:
        return create_ata_ix(self.payer.pubkey(), owner, mint)

    def create_ata(self, owner: Pubkey, mint: Pubkey) -> Pubkey:
        self.send([self.create_ata_ix(owner, mint)])
        return self.ata(owner, mint)

    def mint_to(self, mint: Pubkey, owner: Pubkey, amount: int) -> Pubkey:
        """Mint ``amount`` base units to ``owner``'s ATA (created when missing)."""
        dest = self.ata(owner, mint)
        ixs = []
        if self.chain.svm.get_account(dest) is None:
            ixs.append(self.create_ata_ix(owner, mint))
        ixs.append(mint_to_ix(mint, dest, self.payer.pubkey(), amount))
        self.send(ixs)
        return dest

    # ---- payments ----------------------------------------------------------------

    def transfer_ix(
        self,
        sender: Keypair,
        mint: Pubkey,
        dest: Pubkey,
        amount: int,
        *,
        checked: bool = True,
        decimals: int = 6,
        references: Sequence[Pubkey] = (),
        source: Pubkey | None = None,
    ) -> Instruction:
        src = source or self.ata(sender.pubkey(), mint)
        if checked:
            ix = transfer_checked_ix(src, mint, dest, sender.pubkey(), amount, decimals)
        else:
            ix = transfer_ix(src, dest, sender.pubkey(), amount)
        if references:  # Solana Pay: read-only, non-signer keys appended to the transfer
            metas = [*ix.accounts, *(AccountMeta(r, False, False) for r in references)]
            ix = Instruction(ix.program_id, ix.data, metas)
        return ix

    def pay(
        self,
        sender: Keypair,
        mint: Pubkey,
        recipient: Pubkey,
        amount: int,
        *,
        checked: bool = True,
        create_ata: bool = False,
        memo: str | None = None,
        references: Sequence[Pubkey] = (),
        to_token_account: Pubkey | None = None,
        preflight: bool = True,
    ) -> str:
        """``sender`` pays ``amount`` of ``mint`` to ``recipient``'s ATA (or a given account)."""
        dest = to_token_account or self.ata(recipient, mint)
        ixs: list[Instruction] = []
        if create_ata:
            ixs.append(create_ata_ix(self.payer.pubkey(), recipient, mint, idempotent=True))
        ixs.append(
            self.transfer_ix(sender, mint, dest, amount, checked=checked, references=references)
        )
        if memo is not None:
            ixs.append(Instruction(MEMO_PROGRAM, memo.encode(), []))
        return self.send(ixs, [sender], preflight=preflight)

    def failing_payment(self, sender: Keypair, mint: Pubkey, recipient: Pubkey) -> str:
        """A transfer of more than the sender holds, landed anyway (skipPreflight): meta.err set."""
        too_much = 10**18
        return self.pay(sender, mint, recipient, too_much, preflight=False)

    def token_account(self, owner: Pubkey, mint: Pubkey) -> Pubkey:
        """A second, non-associated token account of ``owner`` for ``mint``."""
        return self.token_accounts(owner, mint, 1)[0]

    def token_accounts(self, owner: Pubkey, mint: Pubkey, n: int) -> list[Pubkey]:
        """``n`` non-associated token accounts of ``owner`` (what anyone may open for us),
        four to a transaction."""
        rent = self.chain.svm.minimum_balance_for_rent_exemption(165)
        out: list[Pubkey] = []
        while len(out) < n:
            accts = [Keypair() for _ in range(min(4, n - len(out)))]
            ixs: list[Instruction] = []
            for acct in accts:
                ixs.append(
                    create_account(
                        CreateAccountParams(
                            from_pubkey=self.payer.pubkey(),
                            to_pubkey=acct.pubkey(),
                            lamports=rent,
                            space=165,
                            owner=TOKEN_PROGRAM_ID,
                        )
                    )
                )
                ixs.append(initialize_account_ix(acct.pubkey(), mint, owner))
            self.send(ixs, accts)
            out += [a.pubkey() for a in accts]
        return out

    def hand_over(self, account: Pubkey, owner: Keypair, new_owner: Pubkey) -> str:
        """``owner`` gives its token account to ``new_owner`` (SetAuthority AccountOwner)."""
        return self.send([set_account_owner_ix(account, owner.pubkey(), new_owner)], [owner])
