"""``POST /gateway/charge``: a backend that is not HTTP-proxied (a queue worker, a gRPC
service, a batch job) charges one call of a gateway route (docs/gateway.md, "Charge
endpoint for backends").

* The backend authenticates with a service key (``Authorization: Bearer wsv_...``,
  ``watcher/service_keys.py``): 401 without one or with an unknown one, 403 when it is
  revoked or not scoped to the route.
* The body names the route (its label, or a concrete method and path), the payer's
  payment (a token, an x402 payload, a subscriber key) and an idempotency key. The
  payment becomes the headers the payer would have sent, and the route is charged
  through ``common.charge`` (the one gate, at the route's price, rails and tiers).
* 200: what was charged. A refusal is the payer's answer as is (402 with its body and,
  in ``payer_headers``, the ``PAYMENT-REQUIRED`` header; 400; 429) plus
  ``"charged": false``, for the backend to relay.
* Idempotency: per service key, the first answer under a key is stored
  (``api/gateway/charge_store.py``); the same body again gets it back without a
  second charge on any rail, another body is 422. A refusal charged nothing and frees
  its key.
* ``POST /gateway/charge/{charge_id}/refund`` gives a token or subscriber charge back
  once, within :data:`charge_store.REFUND_WINDOW`, for a job that failed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.datastructures import URL, Headers

from api import gate, idempotency, payment_required, public_url
from api.errors import DB_ERRORS, ApiError, responses, service_unavailable
from api.gateway import charge_store, common
from api.x402 import offers
from watcher import db, gateway_config, keys, money, service_keys
from watcher.gateway_config import GatewayConfig, Route

log = structlog.get_logger(__name__)

PRINTABLE = r"^[\x20-\x7e]+$"
PAYER_STATUSES = frozenset({400, 402, 429})  # the payer's to see: relayed, never charged


class ConcretePath(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: str = Field(min_length=1, max_length=16, pattern=r"^[A-Za-z]+$")
    path: str = Field(min_length=1, max_length=2048, pattern=r"^/[\x21-\x7e]*$")


class Payment(BaseModel):
    """Exactly one of a token, an x402 payload (with its version) or a subscriber key."""

    model_config = ConfigDict(extra="forbid")
    token: str | None = Field(default=None, min_length=1, max_length=128, pattern=PRINTABLE)
    x402: str | None = Field(default=None, min_length=1, max_length=16384, pattern=PRINTABLE)
    version: Literal[1, 2] | None = None
    subscriber_key: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=PRINTABLE
    )

    @model_validator(mode="after")
    def _one(self) -> Payment:
        given = [v for v in (self.token, self.x402, self.subscriber_key) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of token, x402, subscriber_key")
        if (self.x402 is None) != (self.version is None):
            raise ValueError("version (1 or 2) goes with x402, and only with it")
        return self

    def headers(self) -> Headers:
        """The headers the payer would have sent with this payment."""
        if self.token is not None:
            return Headers({payment_required.TOKEN_HEADER: self.token})
        if self.x402 is not None:
            name = offers.PAYMENT_SIGNATURE if self.version == 2 else offers.X_PAYMENT
            return Headers({name: self.x402})
        return Headers({"authorization": f"Bearer {self.subscriber_key}"})


class ChargeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    route: str | ConcretePath = Field(description='a route label ("GET /v1/forecast/{city}")')
    payment: Payment | None = None  # a free route needs none
    idempotency_key: str = Field(min_length=1, max_length=255, pattern=PRINTABLE)
    resource_url: str | None = Field(
        default=None, max_length=2048, pattern=r"^https?://[\x21-\x7e]+$"
    )
    client: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        pattern=PRINTABLE,
        description="the payer's address as the backend sees it: the route's rate-limit "
        "bucket (default: one bucket per service key)",
    )


async def service_key(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> charge_store.ServiceKey:
    """The service key of ``Authorization: Bearer``; 401 missing or unknown, 403 revoked."""
    scheme, _, secret = (authorization or "").partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise ApiError(
            401,
            "service_key_required",
            "this endpoint needs a service key",
            "send Authorization: Bearer <service key> (watcher service-key create)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    pool: db.Pool = request.app.state.pool
    try:
        row = await pool.fetchrow(db.q("gateway_service_key_use"), keys.sha256(secret))
    except DB_ERRORS as exc:
        log.warning("gateway_charge_db_error", error=repr(exc))
        raise service_unavailable("the database") from exc
    if row is None or not secret.startswith(service_keys.PREFIX):
        raise ApiError(
            401,
            "unknown_service_key",
            "this service key is unknown",
            "use a key printed by watcher service-key create",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if row["revoked_at"] is not None:
        raise ApiError(
            403,
            "service_key_revoked",
            f"service key {row['id']} was revoked at {row['revoked_at'].isoformat()}",
            "ask the operator for a new key (watcher service-key create)",
        )
    return charge_store.ServiceKey(
        id=row["id"], name=row["name"], routes=None if row["all_routes"] else row["routes"]
    )


Key = Annotated[charge_store.ServiceKey, Depends(service_key)]
router = APIRouter(prefix="/gateway", tags=["gateway"])


def _route(config: GatewayConfig, asked: str | ConcretePath) -> tuple[Route, str]:
    """The route asked for and the path its resource URL ends with; 404 when none."""
    if isinstance(asked, str):
        found = next((r for r in config.routes if r.label == asked), None)
        path = found.path if found is not None else ""
    else:
        gate.check_path(asked.path)
        hit = config.find(asked.method.upper(), asked.path)
        found, path = (hit[0], asked.path) if hit is not None else (None, "")
    if found is None:
        raise ApiError(
            404,
            "unknown_route",
            f"no gateway route matches {asked if isinstance(asked, str) else asked.model_dump()}",
            "name a route label of the gateway file (METHOD /path/{param}) or a method and "
            "a path one of its routes matches",
        )
    return found, path


def _fingerprint(body: ChargeRequest) -> bytes:
    """SHA-256 of the request as parsed (key order and spacing do not matter)."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).digest()


def _answer(route: Route, charged: gate.Charge) -> dict[str, Any]:
    return {
        "charged": charged.rail != gateway_config.FREE_RAIL,
        "rail": charged.rail,
        "payer": charged.payer,
        "charge_id": charged.charge_id,
        "remaining": charged.remaining,
        "price_usd": money.usd(0 if route.free else route.price_units),
        "units": 0 if route.free else route.price_units,
        "calls": route.calls,
        "tier": charged.tier,
        "route": route.label,
        "payer_headers": charged.headers,  # PAYMENT-RESPONSE on the x402 rail
    }


def _usage_id(charged: gate.Charge, scope_state: dict[str, Any]) -> int | None:
    if charged.rail == "token":
        return charged.usage_id
    if charged.rail == "subscription":
        value = scope_state.get(gate.SUBSCRIBER_CHARGE_KEY)
        return int(value) if value is not None else None
    return None


@router.post(
    "/charge",
    summary="Charge one call of a gateway route for a backend (service key)",
    responses=responses(400, 401, 402, 403, 404, 409, 422, 429, 503),
)
async def charge(request: Request, key: Key, body: ChargeRequest) -> JSONResponse:
    state = request.app.state
    config: GatewayConfig = state.gateway
    route, path = _route(config, body.route)
    if key.routes is not None and route.label not in key.routes:
        raise ApiError(
            403,
            "route_not_allowed",
            f"service key {key.id} may not charge {route.label}",
            "ask the operator for a key scoped to this route",
        )
    claim = await charge_store.claim(
        state.pool, key.id, body.idempotency_key, _fingerprint(body), route.label
    )
    if isinstance(claim, charge_store.Stored):
        return JSONResponse(claim.answer, headers={idempotency.REPLAYED_HEADER: "true"})
    url = URL(body.resource_url) if body.resource_url else public_url.of_path(request, path)
    scope_state: dict[str, Any] = request.scope.setdefault("state", {})
    try:
        charged = await common.charge(
            state,
            route,
            url,
            body.payment.headers() if body.payment is not None else Headers({}),
            scope_state,
            client=body.client or f"service-key:{key.id}",
            invoice_url=public_url.of_route(request, "create_invoice"),
        )
    except ApiError as exc:  # nothing was charged: the key is free for the retry
        await charge_store.release(state.pool, claim)
        if exc.status not in PAYER_STATUSES:
            raise
        raise ApiError(
            exc.status,
            exc.error,
            exc.message,
            exc.fix,
            headers=exc.headers,
            **exc.extra,
            charged=False,
            payer_headers=exc.headers,
        ) from exc
    answer = _answer(route, charged)
    await charge_store.store(
        state.pool, claim, answer, charged.rail, charged.charge_id, _usage_id(charged, scope_state)
    )
    return JSONResponse(answer)


@router.post(
    "/charge/{charge_id}/refund",
    summary="Give a token or subscriber charge back (once, soon after it)",
    responses=responses(401, 403, 404, 409, 503),
)
async def refund(
    request: Request,
    key: Key,
    charge_id: Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_]+$")],
) -> dict[str, Any]:
    remaining = await charge_store.refund(request.app.state.pool, key.id, charge_id)
    return {"refunded": True, "charge_id": charge_id, "remaining": remaining}
