"""Liveness, readiness and metrics: what load balancers and Prometheus ask.

``/health`` and ``/ready`` answer as ``/healthz`` and ``/readyz`` (same bodies, same codes):
the previous deployment's load balancers and monitors probe those paths
(docs/migrating.md)."""

from __future__ import annotations

import asyncio

import asyncpg
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from watcher import db, metrics

router = APIRouter(tags=["health"])

READY_TIMEOUT_SECONDS = 2.0


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The database answers",
    responses={503: {"description": "PostgreSQL is unreachable"}},
)
async def readyz(request: Request) -> JSONResponse:
    pool: db.Pool = request.app.state.pool
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            await pool.fetchval(db.q("ping"))
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        metrics.DB_UP.set(0)
        return JSONResponse(
            {"status": "unavailable", "database": "unreachable", "detail": type(exc).__name__},
            status_code=503,
        )
    metrics.DB_UP.set(1)
    return JSONResponse({"status": "ready", "database": "ok"})


# The old paths: the same handlers, listed in the schema under their own operation ids.
router.add_api_route(
    "/health", healthz, summary="The process is alive (alias of /healthz)", operation_id="health"
)
router.add_api_route(
    "/ready",
    readyz,
    summary="The database answers (alias of /readyz)",
    operation_id="ready",
    responses={503: {"description": "PostgreSQL is unreachable"}},
)


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
