"""docs/migrating.md names our routes truly: every `METHOD /path` in the "ours" and "what
changes" columns of its path-by-path table is a route of the app, and the old
claim-by-id route stays absent."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from api.app import create_app
from devkit import api_support
from watcher import db

DOC = Path(__file__).resolve().parents[2] / "docs" / "migrating.md"
ROUTE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s]*)")


def _table_cells(column: int) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    table = text.split("## Path by path", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    return [row.split(" | ")[column] for row in rows[1:]]  # after the header


def _routes(pool: db.Pool) -> set[tuple[str, str]]:
    settings = api_support.make_settings(
        stripe_secret_key="sk_test_" + "a" * 24, stripe_webhook_secret="whsec_" + "b" * 24
    )
    # The OpenAPI document: included routers are nested in app.routes, flattened here.
    paths = create_app(settings, pool).openapi()["paths"]
    return {(method.upper(), path) for path, ops in paths.items() for method in ops}


async def test_every_route_of_ours_in_the_table_exists(pool: db.Pool) -> None:
    routes = _routes(pool)
    # "ours" and "what an old client changes" both name only our routes.
    cells = _table_cells(1) + _table_cells(2)
    named = [m.groups() for cell in cells for m in ROUTE.finditer(cell)]
    assert len(named) >= 8, named
    missing = [f"{m} {p}" for m, p in named if (m, p) not in routes]
    assert missing == [], missing


async def test_the_old_claim_by_payment_id_route_is_gone(pool: db.Pool) -> None:
    old = [m.groups() for cell in _table_cells(0) for m in ROUTE.finditer(cell)]
    assert ("POST", "/x402/generate-token/{payment_id}") in old
    assert not any(p.startswith("/x402/generate-token/") for _, p in _routes(pool))
    settings = api_support.make_settings()
    transport = httpx.ASGITransport(app=create_app(settings, pool))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        resp = await http.post("/x402/generate-token/1")
    assert resp.status_code == 404 and resp.json()["error"] == "not_found"
