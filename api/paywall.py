"""The paywall: ``Depends(paywall.paid())`` on a route charges one call to an access token.

* The token travels in ``x-payment-token``; the server knows only its SHA-256.
* One statement decrements ``remaining`` only when enough is left and the
  token is alive, and records the usage row: concurrent calls never overdraw.
* ``Idempotency-Key`` (``api/idempotency.py``): a retry of the same request
  gets the stored answer without running the handler; another request under
  the key is 422, one still running 409. A retry is safe, never free.
* :class:`RefundOn5xx` (ASGI middleware) gives the unit back when the handler
  raises or answers 5xx; the key is released so a retry is charged normally.
* A route's price (``paid(cost)``) is its price on every rail: token units,
  subscriber quota, and the amount the x402 offers ask and verify.
* Standard x402 clients: every 402 also carries the v2 ``PAYMENT-REQUIRED``
  header; a ``PAYMENT-SIGNATURE`` / ``X-PAYMENT`` header is verified and
  settled once before the call is served (the ``api/x402/`` package,
  docs/x402.md).
* Missing, unknown, expired or exhausted token: 402 with the x402 v1 body
  (what to pay, where) plus our invoice endpoint, worded by
  ``api/payment_required.py``. Database trouble: 503, never a free call.
* The other way to pay: ``Authorization: Bearer <subscriber key>`` (a Stripe
  subscription, ``api/entitlements.py``). The same dependency decides: a
  payment token when one is sent, else a subscriber key, else 402; both are
  metered by one statement each, and every 402 lists both ways to pay
  (``ways_to_pay``). A subscriber call that ends in 5xx is not counted
  either; subscriber calls have no Idempotency-Key replay (the quota is
  monthly, not money per call).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Header, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import gate, idempotency, payment_required, public_url
from api.errors import DB_ERRORS, ERROR_SCHEMA, responses
from api.price import Price
from api.x402 import offers
from watcher import db, metrics

log = structlog.get_logger(__name__)

DB_TIMEOUT_SECONDS = gate.DB_TIMEOUT_SECONDS
Charge = gate.Charge
token_hash = gate.token_hash

RESPONSES: dict[int | str, dict[str, Any]] = {
    402: {
        "description": "Payment required: no usable token. The body says how to pay (x402 v1).",
        "content": {"application/json": {"schema": ERROR_SCHEMA}},
    },
    **responses(503),
}


def route_template(request: Request) -> str:
    """``/items/{id}`` rather than ``/items/42``: bounded metric labels and usage stats."""
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else request.url.path


def asked(request: Request, price: Price) -> payment_required.Asked:
    """What a call to this route asks: the resource at its URL for ``price``, every rail."""
    return payment_required.Asked(
        url=public_url.of_request(request),
        invoice_url=public_url.of_route(request, "create_invoice"),
        price=price,
    )


def paid(cost: int = 1) -> Any:
    """A dependency charging ``cost`` calls to the request (402/503 otherwise): a token,
    a subscriber key or an x402 payment for ``cost`` calls' price (``api/gate.py``)."""

    async def dependency(  # the headers are declared for the OpenAPI page; gate reads them
        request: Request,
        response: Response,
        x_payment_token: Annotated[str | None, Header(alias=payment_required.TOKEN_HEADER)] = None,
        idempotency_key: Annotated[str | None, Header(alias=idempotency.HEADER)] = None,
        authorization: Annotated[str | None, Header()] = None,
        payment_signature: Annotated[str | None, Header(alias=offers.PAYMENT_SIGNATURE)] = None,
        x_payment: Annotated[str | None, Header(alias=offers.X_PAYMENT)] = None,
    ) -> Charge:
        gate.check_path(request.url.path, request.url.query)
        call = gate.Call(
            state=request.app.state,
            asked=asked(request, Price.of_calls(request.app.state.settings, cost)),
            endpoint=route_template(request),
            headers=request.headers,
            scope_state=request.scope.setdefault("state", {}),
            fingerprint=lambda: idempotency.fingerprint(request),
        )
        charge = await gate.charge(call)
        response.headers.update(charge.headers)
        return charge

    return Depends(dependency)


class RefundOn5xx:
    """Give the charged unit back when the handler raises or answers 5xx."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        status, delivered = 0, False

        async def watch(message: Message) -> None:
            nonlocal status, delivered
            if message["type"] == "http.response.start":
                status = message["status"]
                if status >= 500:
                    # Given back before the client reads the failure: a payer who retries
                    # at once finds the unit there (``_refund`` runs once: it pops the key).
                    await self._refund(scope, state, status)
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                delivered = True

        try:
            await self.app(scope, receive, watch)
        except Exception:
            # A failure after the whole answer went out (a background task) refunds
            # nothing: the client was served, and a refund would make the call free.
            if not delivered or status >= 500:
                await self._refund(scope, state, 500)
            raise
        if status >= 500:
            await self._refund(scope, state, status)

    async def _refund(self, scope: Scope, state: dict[str, Any], status: int) -> None:
        query, usage_id = "api_refund", state.pop(gate.CHARGE_KEY, None)
        if usage_id is None:
            query, usage_id = "stripe_refund_usage", state.pop(gate.SUBSCRIBER_CHARGE_KEY, None)
        if usage_id is None:
            return
        pool: db.Pool = scope["app"].state.pool
        try:
            async with asyncio.timeout(DB_TIMEOUT_SECONDS):
                await pool.fetchval(db.q(query), usage_id, status)
        except DB_ERRORS as exc:  # the payer loses one unit; never the reverse
            log.error("refund_failed", usage_id=usage_id, error=repr(exc))
            return
        metrics.METERED_CALLS.labels("refunded").inc()


router = APIRouter(tags=["paid"])


@router.get(
    "/x402/example/paid",
    summary="An example paid route: one call from your token",
    responses=RESPONSES,
)
async def example_paid(charge: Annotated[Charge, paid()]) -> dict[str, Any]:
    return {
        "result": "paid content",
        "remaining": charge.remaining,
        "expires_at": charge.expires_at.isoformat(),
    }


@router.get("/x402/example/free", summary="The same route without a paywall (for comparison)")
async def example_free() -> dict[str, Any]:
    return {"result": "free content"}
