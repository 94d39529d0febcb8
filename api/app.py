"""The FastAPI application factory."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from api import errors, idempotency, paywall
from api.gateway import forward_auth, proxy
from api.routes import admin, health, tokens
from api.routes import stripe as stripe_routes
from api.x402 import clients
from watcher import __version__, db, gateway_config
from watcher.settings import Settings


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    try:
        yield
    finally:  # the RPC pools and HTTP clients the app opened, closed with it
        await app.state.clients.aclose()
        await proxy.aclose(app)


def create_app(
    settings: Settings, pool: db.Pool, gateway: gateway_config.GatewayConfig | None = None
) -> FastAPI:
    """Build the API around an existing pool; the caller owns the pool's lifetime.

    The app owns its outside clients (``app.state.clients``: RPC pools per network, the
    relayers, the facilitator client), built here once and closed by its lifespan.
    ``gateway``: the routes of the gateway file (default: the file
    ``WATCHER_GATEWAY_CONFIG`` names, if any), on ``app.state.gateway``."""
    app = FastAPI(
        title="USDC payment watcher",
        version=__version__,
        description="Look up credited USDC payments, claim access tokens, pay per call (x402).",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.pool = pool
    app.state.clients = clients.Clients(settings)
    app.state.gateway = gateway if gateway is not None else gateway_config.from_settings(settings)
    app.include_router(health.router)
    app.include_router(tokens.router)
    app.include_router(admin.router)
    app.include_router(paywall.router)
    if app.state.gateway is not None:  # forward-auth mode: the operator's proxy asks here
        forward_auth.mount(app)
    if stripe_routes.enabled(settings):  # the card rail is off until Stripe is configured
        app.include_router(stripe_routes.router)
    if app.state.gateway is not None:  # last: our own routes always match first
        proxy.install(app, app.state.gateway)
    app.add_middleware(idempotency.StoreAnswers)
    app.add_middleware(paywall.RefundOn5xx)
    app.add_exception_handler(idempotency.Replay, idempotency.replay_handler)
    errors.install(app)
    return app
