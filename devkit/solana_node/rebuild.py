"""Transactions rebuilt for a simulation (what ``replaceRecentBlockhash`` asks)."""

from __future__ import annotations

from solders.hash import Hash
from solders.message import Message, MessageV0
from solders.transaction import VersionedTransaction


def with_blockhash(tx: VersionedTransaction, blockhash: Hash) -> VersionedTransaction:
    """The same transaction under another recent blockhash, its signatures kept as sent
    (they no longer verify: only for a simulation with signature checks off)."""
    m = tx.message
    if isinstance(m, MessageV0):
        message: Message | MessageV0 = MessageV0(
            m.header, m.account_keys, blockhash, m.instructions, m.address_table_lookups
        )
    else:
        message = Message.new_with_compiled_instructions(
            m.header.num_required_signatures,
            m.header.num_readonly_signed_accounts,
            m.header.num_readonly_unsigned_accounts,
            m.account_keys,
            blockhash,
            m.instructions,
        )
    return VersionedTransaction.populate(message, tx.signatures)
