"""The x402 package's exceptions: one small tree under the watcher's root.

    errors.WatcherError
    └── X402Error                 an x402 payment could not be taken
        ├── Refused               we will not settle it: a 402 naming the spec's reason
        └── SettlementError       it could not be settled
            ├── RelayerUnfunded   our EVM relayer cannot pay for gas: nothing was sent
            ├── FeePayerUnfunded  our Solana fee payer cannot pay the fee: nothing was sent
            ├── SettlementRejected the chain or facilitator said no (reason given)
            └── SettlementUnknown sent, but no answer in time: never served

``Refused`` becomes the paywall's 402 (400 for a malformed header); the unfunded
pair a 503 naming the account; ``SettlementUnknown`` a 503 (the call is not served).
"""

from __future__ import annotations

from watcher import errors


class X402Error(errors.WatcherError):
    """The x402 payment could not be taken."""


class Refused(X402Error):
    """An x402 payment we will not settle: ``reason`` is the spec's error code."""

    def __init__(
        self,
        reason: str,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        status: int = 402,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.headers = headers or {}  # a failed settlement's PAYMENT-RESPONSE (success false)
        # 400 when the header is not an x402 payload at all (the transport spec's
        # "malformed payment payload"); 402 when it is one we refuse.
        self.status = status


class SettlementError(X402Error):
    """The authorization could not be settled."""


class RelayerUnfunded(SettlementError):
    """The relayer account cannot pay for gas; fund it (nothing was sent or charged)."""


class FeePayerUnfunded(SettlementError):
    """Our fee payer cannot pay for the settlement."""


class SettlementRejected(SettlementError):
    """The settlement was refused (the transaction would revert, or the facilitator said no)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SettlementUnknown(SettlementError):
    """The transaction was sent but no receipt arrived in time; the call was not served."""
