"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI

from api import errors, idempotency, paywall
from api.routes import admin, health, x402
from api.routes import stripe as stripe_routes
from watcher import __version__, db
from watcher.settings import Settings


def create_app(settings: Settings, pool: db.Pool) -> FastAPI:
    """Build the API around an existing pool; the caller owns the pool's lifetime."""
    app = FastAPI(
        title="USDC payment watcher",
        version=__version__,
        description="Look up credited USDC payments, claim access tokens, pay per call (x402).",
    )
    app.state.settings = settings
    app.state.pool = pool
    app.include_router(health.router)
    app.include_router(x402.router)
    app.include_router(admin.router)
    app.include_router(paywall.router)
    if stripe_routes.enabled(settings):  # the card rail is off until Stripe is configured
        app.include_router(stripe_routes.router)
    app.add_middleware(idempotency.StoreAnswers)
    app.add_middleware(paywall.RefundOn5xx)
    app.add_exception_handler(idempotency.Replay, idempotency.replay_handler)
    errors.install(app)
    return app
