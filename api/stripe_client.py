"""The one module that calls Stripe: idempotent creates, bounded retries, a circuit breaker.

* Every create carries an idempotency key derived from our own row (the
  checkout id), so a retry, or the same request sent again after a crash,
  makes one Stripe object, not two.
* Retries with exponential backoff and jitter on connection errors (timeouts
  included) and on rate limiting (429) only. A card error, an invalid request
  or an authentication error is final: retrying would not change it.
* A circuit breaker opens after ``breaker_threshold`` consecutive calls that
  failed for want of Stripe (after their retries) and refuses at once for
  ``breaker_cooldown`` seconds; then one trial call decides.
* Stripe's exceptions become ``errors.BillingUnavailable`` (the API answers
  502/503) or ``errors.BillingRejected`` (402 for a card, 502 otherwise) here.

The HTTP transport is the test seam: pass an ``httpx.AsyncBaseTransport`` to
serve recorded responses, or point ``STRIPE_API_BASE`` at a local fake.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import httpx
import stripe
import structlog

from api import public_url
from watcher import errors, metrics
from watcher.settings import Settings, is_placeholder

log = structlog.get_logger(__name__)

T = TypeVar("T")


class _NoAnswer(errors.BillingUnavailable):
    """The request got no HTTP answer (refused, reset, timed out): safe to retry."""


class _Transported(stripe.HTTPClient):
    """stripe's HTTP client interface over our own httpx client (async only).

    Ours rather than ``stripe.HTTPXClient``: that one posts the form with httpx's
    deprecated ``data=<str>`` and cannot take a transport, which is our test seam.
    """

    name = "httpx"

    def __init__(self, timeout: float, transport: httpx.AsyncBaseTransport | None) -> None:
        super().__init__()
        self.own = httpx.AsyncClient(transport=transport, timeout=timeout)

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        try:
            response = await self.own.request(method, url, headers=headers, content=post_data)
        except httpx.HTTPError as exc:
            raise _NoAnswer(f"no answer from Stripe ({type(exc).__name__})") from exc
        return response.content, response.status_code, response.headers

    def sleep_async(self, secs: float) -> Awaitable[None]:
        return asyncio.sleep(secs)

    async def close_async(self) -> None:
        await self.own.aclose()


class CircuitBreaker:
    """Closed -> open after N consecutive failures -> one trial after the cooldown.

    ``watcher_stripe_circuit_open`` is read from the live breakers when scraped: a gauge
    set only on calls stayed at 1 after the cooldown while no call came to close it,
    and the StripeCircuitOpen alert kept firing with nothing refused.
    """

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at: float | None = None
        with _BREAKERS_LOCK:
            _BREAKERS.add(self)

    def is_open(self) -> bool:
        """True while calls are refused (opened, and the cooldown not over)."""
        opened = self.opened_at
        return opened is not None and time.monotonic() - opened < self.cooldown

    def check(self) -> None:
        if self.opened_at is None:
            return
        waited = time.monotonic() - self.opened_at
        if waited < self.cooldown:
            raise errors.BillingUnavailable(
                "Stripe is failing; payments are paused for a moment, retry shortly",
                retry_after=self.cooldown - waited,
            )
        self.opened_at = None  # half-open: this call is the trial

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = time.monotonic()
            log.warning("stripe_breaker_open", failures=self.failures)


# Every breaker of this process (the API's, the daemon's Stripe catch-up), forgotten
# with its client. The lock: the metrics server scrapes from its own thread.
_BREAKERS: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()
_BREAKERS_LOCK = threading.Lock()


def _any_open() -> float:
    with _BREAKERS_LOCK:
        return float(any(b.is_open() for b in list(_BREAKERS)))


metrics.STRIPE_CIRCUIT_OPEN.set_function(_any_open)


class StripeBilling:
    """Checkout sessions, portal sessions and customers, through Stripe's API."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        attempts: int = 4,
        base_delay: float = 0.2,
        max_delay: float = 3.0,
        timeout: float = 10.0,
        breaker_threshold: int = 5,
        breaker_cooldown: float = 30.0,
    ) -> None:
        secret = settings.stripe_secret_key
        raw = secret.get_secret_value().strip() if secret is not None else ""
        self.configured = bool(raw) and not is_placeholder(raw)
        self.settings = settings
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.breaker = CircuitBreaker(breaker_threshold, breaker_cooldown)
        self._http = _Transported(timeout, transport)
        self._client = stripe.StripeClient(
            raw or "sk_unset",
            base_addresses={"api": settings.stripe_api_base},
            http_client=self._http,
            max_network_retries=0,  # we retry, with our own policy, below
        )

    async def aclose(self) -> None:
        await self._http.close_async()

    async def _call(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        call = what.split()[0]  # customer, checkout, portal: the metric's small label set
        try:
            result = await self._attempts(what, call, make)
        except errors.BillingUnavailable as exc:
            outcome = "breaker_open" if exc.retry_after is not None else "unavailable"
            metrics.STRIPE_API_CALLS.labels(call, outcome).inc()
            raise
        except errors.BillingRejected as exc:
            outcome = "card_declined" if exc.card_error else "rejected"
            metrics.STRIPE_API_CALLS.labels(call, outcome).inc()
            raise
        metrics.STRIPE_API_CALLS.labels(call, "ok").inc()
        return result

    async def _attempts(self, what: str, call: str, make: Callable[[], Awaitable[T]]) -> T:
        if not self.configured:
            raise errors.BillingUnavailable("Stripe is not configured (STRIPE_SECRET_KEY)")
        self.breaker.check()
        for attempt in range(1, self.attempts + 1):
            try:
                result = await make()
            except (_NoAnswer, stripe.APIConnectionError, stripe.RateLimitError) as exc:
                if attempt == self.attempts:
                    self.breaker.failure()
                    raise errors.BillingUnavailable(
                        f"Stripe did not answer {what} after {attempt} attempts"
                    ) from exc
                delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
                metrics.STRIPE_API_CALLS.labels(call, "retried").inc()
                log.warning("stripe_retry", call=what, attempt=attempt, error=type(exc).__name__)
                await asyncio.sleep(random.uniform(delay / 2, delay))
            except stripe.CardError as exc:
                self.breaker.success()  # Stripe answered: it is up
                raise errors.BillingRejected(
                    exc.user_message or "the card was declined", code=exc.code, card_error=True
                ) from exc
            except stripe.StripeError as exc:
                self._answered_or_down(exc)
                raise errors.BillingRejected(
                    f"Stripe refused {what}: {exc.user_message or type(exc).__name__}",
                    code=exc.code,
                ) from exc
            else:
                self.breaker.success()
                return result
        raise AssertionError("unreachable: the loop returns or raises")

    def _answered_or_down(self, exc: stripe.StripeError) -> None:
        if (exc.http_status or 500) >= 500:
            self.breaker.failure()
        else:
            self.breaker.success()

    async def create_customer(self, email: str, *, idempotency_key: str) -> str:
        """A Stripe customer for ``email``; the same key returns the same customer."""
        # Typed Any: stripe types params as TypedDicts; the fake-server tests check the keys.
        params: Any = {"email": email}
        customer = await self._call(
            "customer create",
            lambda: self._client.v1.customers.create_async(
                params,
                {"idempotency_key": idempotency_key},
            ),
        )
        return str(customer.id)

    async def create_checkout(
        self, *, checkout_id: uuid.UUID, price: str, tier: str, customer: str
    ) -> tuple[str, str]:
        """A subscription-mode Checkout Session; returns ``(session id, url)``."""
        params: Any = {
            "mode": "subscription",
            "customer": customer,
            "client_reference_id": str(checkout_id),
            "line_items": [{"price": price, "quantity": 1}],
            "success_url": public_url.settings_url(self.settings, "stripe_success_url")
            + "?session_id={CHECKOUT_SESSION_ID}",
            "cancel_url": public_url.settings_url(self.settings, "stripe_cancel_url"),
            "metadata": {"tier": tier, "checkout_id": str(checkout_id)},
            "subscription_data": {"metadata": {"tier": tier}},
        }
        if self.settings.stripe_automatic_tax:
            params["automatic_tax"] = {"enabled": True}
            # Tax needs an address: let Checkout collect it onto the customer.
            params["customer_update"] = {"address": "auto", "name": "auto"}
            params["tax_id_collection"] = {"enabled": True}
        session = await self._call(
            "checkout session create",
            lambda: self._client.v1.checkout.sessions.create_async(
                params,
                {"idempotency_key": f"checkout-{checkout_id}"},
            ),
        )
        return str(session.id), str(session.url)

    async def create_portal(self, customer: str) -> str:
        """A Customer Portal session URL for ``customer`` (upgrades, cards, cancel)."""
        key = f"portal-{uuid.uuid4()}"  # one per request; reused by its retries
        params: Any = {
            "customer": customer,
            "return_url": public_url.settings_url(self.settings, "stripe_portal_return_url"),
        }
        session = await self._call(
            "portal session create",
            lambda: self._client.v1.billing_portal.sessions.create_async(
                params,
                {"idempotency_key": key},
            ),
        )
        return str(session.url)

    async def list_events(
        self, *, created_gte: int, starting_after: str | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page (newest first) of Stripe's events since ``created_gte``; and whether more."""
        params: Any = {"created": {"gte": created_gte}, "limit": 100}
        if starting_after is not None:
            params["starting_after"] = starting_after
        page = await self._call("events list", lambda: self._client.v1.events.list_async(params))
        return [event.to_dict() for event in page.data], bool(page.has_more)
