"""Refunds: giving money back (issue 16)."""
