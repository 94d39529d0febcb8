"""What one call of a route costs, on every rail at once.

A route has one price in USDC base units. The x402 rail asks exactly that
amount; the token and subscriber rails count calls at ``X402_PRICE_PER_CALL``,
so they take a route only when its price is a whole number of calls
(``calls``; None means x402 only). The paywall's ``paid(cost)`` routes and the
gateway's configured routes both become a :class:`Price`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from watcher import money
from watcher.settings import Settings

# The three rails a paid route can take: our prepaid token (x-payment-token), a standard
# x402 payment header, a Stripe subscriber key (Authorization: Bearer).
ALL_RAILS: Final = frozenset({"token", "x402", "subscription"})


@dataclass(frozen=True, slots=True)
class Price:
    """A route's price: ``units`` of USDC, and the calls a token or key is charged."""

    units: int
    calls: int | None

    def __post_init__(self) -> None:
        if self.units <= 0 or (self.calls is not None and self.calls <= 0):
            raise ValueError(f"a price must be positive: {self.units} units, {self.calls} calls")

    @classmethod
    def of_calls(cls, settings: Settings, calls: int = 1) -> Price:
        """``calls`` calls at the configured price per call."""
        return cls(settings.price_per_call_units * calls, calls)

    @classmethod
    def of_units(cls, settings: Settings, units: int) -> Price:
        """``units`` base units; whole calls when the amount divides by the price per call."""
        calls, rest = divmod(units, settings.price_per_call_units)
        return cls(units, calls if rest == 0 and calls > 0 else None)

    def describe(self, path: str) -> str:
        """The offer's description: how many calls, where, for how much."""
        usd = money.usd(self.units)
        if self.calls is None or self.calls == 1:
            return f"one call to {path} (${usd})"
        return f"{self.calls} calls to {path} (${usd})"
