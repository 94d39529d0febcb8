"""Screening: which payments are held for an operator's look before they are credited.

``core`` is the judgement (pure: facts in, the rules that fired out); the deny-list
file and the on-chain sanctions oracle are its address sources. The ledger asks the
process's screen (``core.current()``) on the one credit path (docs/holds-and-refunds.md).
"""
