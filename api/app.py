"""The FastAPI application factory."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from api import docs_ui, errors, idempotency, live, paywall
from api.gateway import charge as gateway_charge
from api.gateway import forward_auth, proxy, service_keys_admin
from api.routes import admin as admin_routes
from api.routes import events_feed, health, tokens, webhooks_admin
from api.routes import refunds as refunds_routes
from api.routes import stripe as stripe_routes
from api.x402 import clients
from watcher import __version__, db, gateway_config
from watcher.settings import Settings


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The one listening connection of this process (api/live.py), shared by its apps.
    app.state.live = live.attach(app.state.pool)
    try:
        yield
    finally:  # the RPC pools and HTTP clients the app opened, closed with it
        await live.detach(app.state.pool)
        app.state.live = None
        await app.state.clients.aclose()
        await proxy.aclose(app)


def create_app(
    settings: Settings,
    pool: db.Pool,
    gateway: gateway_config.GatewayConfig | None = None,
    *,
    admin: bool = True,
    gateway_routes: bool = True,
) -> FastAPI:
    """Build the API around an existing pool; the caller owns the pool's lifetime.

    The app owns its outside clients (``app.state.clients``: RPC pools per network, the
    relayers, the facilitator client), built here once and closed by its lifespan.
    ``gateway``: the routes of the gateway file (default: the file
    ``WATCHER_GATEWAY_CONFIG`` names, if any), on ``app.state.gateway``, served by this
    app unless ``gateway_routes`` is false (the gateway has a listener of its own);
    ``admin`` false leaves the admin routes out (that public listener)."""
    app = FastAPI(
        title="USDC payment watcher",
        version=__version__,
        description="Look up credited USDC payments, claim access tokens, pay per call (x402).",
        lifespan=_lifespan,
        # FastAPI's pages load Swagger UI and ReDoc from a CDN: ours serve packaged copies.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.pool = pool
    app.state.clients = clients.Clients(settings)
    app.state.live = None  # the lifespan attaches the process's hub (api/live.py)
    config = gateway if gateway is not None else gateway_config.from_settings(settings)
    app.state.gateway = config if gateway_routes else None
    app.include_router(health.router)
    docs_ui.install(app)
    app.include_router(tokens.router)
    if admin:
        app.include_router(admin_routes.router)
        app.include_router(webhooks_admin.router)
        app.include_router(refunds_routes.router)
        # The feed is for the merchant's own systems: beside the admin routes, off the
        # public gateway listener.
        app.include_router(events_feed.router)
    app.include_router(paywall.router)
    if app.state.gateway is not None:  # forward-auth, and backends charging the routes
        forward_auth.mount(app)
        app.include_router(gateway_charge.router)
    if admin and config is not None:  # service keys are the operator's, on the admin side
        app.include_router(service_keys_admin.router)
    if stripe_routes.enabled(settings):  # the card rail is off until Stripe is configured
        app.include_router(stripe_routes.router)
    if app.state.gateway is not None:  # last: our own routes always match first
        proxy.install(app, app.state.gateway)
    app.add_middleware(idempotency.StoreAnswers)
    app.add_middleware(paywall.RefundOn5xx)
    app.add_exception_handler(idempotency.Replay, idempotency.replay_handler)
    errors.install(app)
    return app
