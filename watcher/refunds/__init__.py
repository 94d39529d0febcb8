"""Refunds (issue 16): money given back for a payment, exactly once.

``model`` (states, kinds, what is refundable), ``store`` (the refund ledger: request,
sign record, sent, failed), ``proof`` (who may receive), ``outgoing`` (the followers'
hook: our outgoing transfers linked and confirmed), ``evm`` (the EVM sender and the
unsigned exports), ``candidates``, ``worker`` (the daemon's loop). docs/holds-and-refunds.md.
"""
