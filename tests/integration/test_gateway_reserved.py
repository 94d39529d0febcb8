"""Every route the real app serves is covered by the gateway's reserved prefixes, so no
gateway route can shadow one of ours (watcher/gateway_paths.py RESERVED)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from devkit import api_support
from watcher import db, gateway_paths


def _paths(app: Any) -> Iterator[str]:
    """Every path the app serves; FastAPI (0.16x) keeps an included router's routes behind
    one entry, whose effective routes carry the full paths (prefix included)."""
    for route in app.routes:
        if hasattr(route, "effective_route_contexts"):
            yield from (c.path for c in route.effective_route_contexts())
        else:
            yield route.path


async def test_every_route_of_the_app_is_reserved(pool: db.Pool) -> None:
    # Stripe configured so its routes are mounted too.
    app = api_support.app_for(
        pool,
        stripe_secret_key="sk_test_" + "x" * 24,
        stripe_webhook_secret="whsec_" + "y" * 24,
        stripe_price_id_pro="price_pro",
    )
    try:
        paths = sorted(set(_paths(app)))
        assert any(p.startswith("/api/v1/") for p in paths), paths  # Stripe is mounted
        assert {"/docs", "/openapi.json", "/healthz", "/x402/pricing"} <= set(paths)
        uncovered = [p for p in paths if not gateway_paths.is_reserved(p)]
        assert uncovered == [], f"add these to gateway_paths.RESERVED: {uncovered}"
        # ... and a gateway route written as any of them is refused.
        for p in paths:
            segments, problems = gateway_paths.parse(p)
            assert problems or gateway_paths.reserved_collision(segments) is not None, p
    finally:
        await app.state.clients.aclose()
