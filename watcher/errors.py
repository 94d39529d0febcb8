"""The watcher's exception tree. Every error we raise on purpose is one of these.

    WatcherError
    ├── ConfigError            settings missing, malformed or placeholders in production
    ├── DatabaseError          PostgreSQL unreachable, a migration failed or was edited
    │   ├── DatabaseUnreachable  the server did not answer or refused us (names the fix)
    │   └── MigrationError
    ├── ListenError            a port to serve on is taken or not ours (names the variable)
    ├── QueryFileError         the named-query files (watcher/sql/) are malformed: a name twice
    ├── RpcError               a JSON-RPC call could not be answered
    │   ├── RpcTransportError  connection refused/reset, timeout, HTTP 5xx, garbage body
    │   ├── RpcRateLimited     HTTP 429 or a provider's rate-limit code (carries retry_after)
    │   ├── RpcResponseError   the node answered with a JSON-RPC error object
    │   │   └── RangeTooLarge  eth_getLogs range/size refusal (carries a suggested range)
    │   ├── WrongChain         the endpoint serves another chain id than configured
    │   └── NoHealthyEndpoint  every endpoint of the pool is refused or its breaker is open
    ├── ReorgDetected          a new block's parent is not the block we stored
    ├── LockLost               the connection holding a chain's leader lock went away
    └── BillingError           Stripe could not do what we asked
        ├── BillingUnavailable unreachable, timed out, rate limited after retries, breaker open
        └── BillingRejected    Stripe refused the request (card declined, invalid parameters)

The docstring of each class is its default message. Adapters translate library
exceptions (httpx, websockets, asyncpg, web3, solana, stripe) into these with
``raise ... from exc`` at the boundary, so callers only ever catch ours.
"""

from __future__ import annotations


class WatcherError(Exception):
    """The watcher failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or self.__class__.__name__).strip())


class ConfigError(WatcherError):
    """The configuration is invalid."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration ({len(problems)} problem(s)):\n{lines}")


class DatabaseError(WatcherError):
    """The database could not be used."""


class DatabaseUnreachable(DatabaseError):
    """PostgreSQL could not be reached or refused the connection."""


class ListenError(WatcherError):
    """A listening port could not be opened."""


class MigrationError(DatabaseError):
    """A schema migration failed."""


class QueryFileError(WatcherError):
    """The named-query files are malformed."""


class RpcError(WatcherError):
    """A JSON-RPC request failed."""

    def __init__(self, message: str | None = None, *, endpoint: str | None = None) -> None:
        self.endpoint = endpoint
        super().__init__(message)


class RpcTransportError(RpcError):
    """The endpoint could not be reached or sent an unreadable answer."""


class RpcRateLimited(RpcError):
    """The endpoint is rate limiting us."""

    def __init__(
        self,
        message: str | None = None,
        *,
        endpoint: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, endpoint=endpoint)


class RpcResponseError(RpcError):
    """The node answered with a JSON-RPC error."""

    def __init__(
        self,
        message: str | None = None,
        *,
        endpoint: str | None = None,
        code: int | None = None,
        data: object = None,
    ) -> None:
        self.code = code
        self.data = data
        super().__init__(message, endpoint=endpoint)


class RangeTooLarge(RpcResponseError):
    """The node refused the block range or result size of eth_getLogs."""

    def __init__(
        self,
        message: str | None = None,
        *,
        endpoint: str | None = None,
        code: int | None = None,
        suggested: tuple[int, int] | None = None,
    ) -> None:
        self.suggested = suggested
        super().__init__(message, endpoint=endpoint, code=code)


class WrongChain(RpcError):
    """The endpoint serves a different chain than configured."""


class NoHealthyEndpoint(RpcError):
    """No endpoint of the pool can take requests right now."""


class ReorgDetected(WatcherError):
    """The chain reorganised under us: a block's parent hash does not match what we stored."""

    def __init__(self, message: str | None = None, *, block: int | None = None) -> None:
        self.block = block
        super().__init__(message)


class LockLost(WatcherError):
    """The connection holding the leader lock went away."""


class BillingError(WatcherError):
    """The payment provider (Stripe) could not do what we asked."""


class BillingUnavailable(BillingError):
    """Stripe cannot be reached right now; try again later."""

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class BillingRejected(BillingError):
    """Stripe refused the request."""

    def __init__(
        self, message: str | None = None, *, code: str | None = None, card_error: bool = False
    ) -> None:
        self.code = code
        self.card_error = card_error
        super().__init__(message)
