"""Money: USDC base units <-> dollars, and the one way an amount is shown.

Amounts live as integers of base units (USDC has 6 decimals, so 1,000,000
units are $1): ``int`` in Python, ``numeric(78,0)`` in PostgreSQL. This module
is the only place that turns them into text for a person or a JSON answer,
with one rule for every surface (API, CLI, logs, stored reasons):

* **Base units** leave as a plain integer string: ``"1000000"``. Never an
  exponent (asyncpg can hand a ``numeric`` back as ``Decimal('1.00E+6')``,
  whose ``str()`` is just that), never a float, never a fraction.
* **Dollars** leave as a decimal string with at least 2 and at most 6
  decimals, trailing zeros after the second trimmed, no exponent, no
  thousands separator, no currency sign: ``"0.10"``, ``"1800.00"``,
  ``"2.35"``, ``"0.000907"``. Six decimals are all USDC has, so the text is
  exact; it is computed with integers, never through a float.

One protocol field is not a display and keeps the form its spec shows: the
``amount`` of a Solana Pay URL, a token amount with the fewest digits (``"0.5"``,
``"1"``), written by :func:`token_amount`.

Dollars come in as :class:`~decimal.Decimal` (settings, request bodies) and
become base units exactly or not at all (:func:`usd_to_units`).
"""

from __future__ import annotations

import decimal
from decimal import Decimal

from watcher import networks

USDC_DECIMALS = networks.USDC_DECIMALS
USDC_UNIT = 10**USDC_DECIMALS

_MIN_DECIMALS = 2
# Enough digits for any numeric(78,0) amount times 10**6 and back, exactly.
_EXACT = decimal.Context(prec=100, traps=[decimal.InvalidOperation, decimal.Inexact])


def usd_to_units(value: Decimal) -> int:
    """Dollars to USDC base units, exactly (6 decimals); ValueError if it is not exact."""
    if not value.is_finite():
        raise ValueError("is not a number")
    try:
        units = _EXACT.multiply(value, USDC_UNIT)
    except (decimal.InvalidOperation, decimal.Inexact) as exc:
        raise ValueError("is too large") from exc
    if units != units.to_integral_value(context=_EXACT):
        raise ValueError("has more than 6 decimal places")
    return int(units)


def as_units(value: int | Decimal | str) -> int:
    """A base-unit amount (int, a ``numeric`` Decimal, or its text) as an ``int``, exactly.

    A fraction of a base unit is refused (ValueError): it is not an amount.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an amount of base units")
    if isinstance(value, int):
        return value
    try:
        d = Decimal(value)
    except decimal.InvalidOperation as exc:
        raise ValueError(f"{value!r} is not an amount of base units") from exc
    if not d.is_finite() or d != d.to_integral_value(context=_EXACT):
        raise ValueError(f"{value!r} is not a whole number of base units")
    return int(d)


def units_text(value: int | Decimal | str) -> str:
    """Base units as the plain integer string JSON answers carry: ``"1000000"``."""
    return str(as_units(value))


def usd(value: int | Decimal | str) -> str:
    """Base units as dollars: ``100000`` -> ``"0.10"``, ``907`` -> ``"0.000907"``."""
    units = as_units(value)
    whole, frac = divmod(abs(units), USDC_UNIT)
    decimals = f"{frac:0{USDC_DECIMALS}d}".rstrip("0").ljust(_MIN_DECIMALS, "0")
    return f"{'-' if units < 0 else ''}{whole}.{decimals}"


def token_amount(value: int | Decimal | str) -> str:
    """Base units as a USDC amount with the fewest digits (``500000`` -> ``"0.5"``).

    For Solana Pay URLs only, whose ``amount`` is written that way; people see :func:`usd`.
    """
    units = as_units(value)
    whole, frac = divmod(abs(units), USDC_UNIT)
    decimals = f"{frac:0{USDC_DECIMALS}d}".rstrip("0")
    return f"{'-' if units < 0 else ''}{whole}" + (f".{decimals}" if decimals else "")
