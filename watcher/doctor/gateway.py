"""The doctor's Gateway section: the file's problems, each route, and one probe per upstream.

Routes are listed as ``GET /v1/forecast/{city}  → weather /api/forecast/{city} · $0.30
(3 calls) · token, x402, subscription · tiers any``. An upstream is reachable when it
answers its base URL with any HTTP status (a 404 at ``/`` is an answer); refused,
unresolvable or silent within its connect timeout is a ✗ naming the upstream and URL.
"""

from __future__ import annotations

import httpx

from watcher import gateway_config, money
from watcher.doctor.report import Check
from watcher.settings import Settings

GROUP = "gateway"


def load(settings: Settings) -> tuple[gateway_config.GatewayConfig | None, list[Check]]:
    """The file (None when unset or invalid) and its rows: one ✗ per problem, as production."""
    if settings.watcher_gateway_config is None:
        return None, []  # no gateway: no section (the other rows' score stays as it was)
    rows = [Check(GROUP, "WATCHER_GATEWAY_CONFIG", "ok", str(settings.watcher_gateway_config))]
    # Judged as production (the doctor's rule): a missing or weak secret counts. Production
    # only adds checks, so its problems include the ones the current mode would raise.
    prod = settings.model_copy(update={"watcher_env": "production"})
    try:
        gateway_config.from_settings(prod)
    except gateway_config.GatewayConfigError as exc:
        rows += _problem_rows(exc)
    try:
        config = gateway_config.from_settings(settings)
    except gateway_config.GatewayConfigError:
        return None, rows
    if config is None:
        return None, rows
    return config, rows + [route_row(r) for r in config.routes]


def _problem_rows(exc: gateway_config.GatewayConfigError) -> list[Check]:
    prefix = f"{exc.path}: "
    out = []
    for problem in exc.problems:
        text = problem.removeprefix(prefix)
        where, _, why = text.partition(": ")
        out.append(Check(GROUP, where, "fail", "", why or text))
    return out


def route_row(route: gateway_config.Route) -> Check:
    """One route as the operator reads it: where it goes, what it costs, how it is paid."""
    if route.free:
        price = "free"
    else:
        calls = f"{route.calls} call{'s' if route.calls != 1 else ''}" if route.calls else "—"
        price = f"${money.usd(route.price_units)} ({calls})"
    rails = ", ".join(sorted(route.rails))
    tiers = ", ".join(sorted(route.tiers)) if route.tiers is not None else "any"
    value = f"→ {route.upstream} {route.upstream_path} · {price} · {rails}"
    if "subscription" in route.rails:
        value += f" · tiers {tiers}"
    return Check(GROUP, route.label, "ok", value)


async def upstream_rows(
    upstream: gateway_config.Upstream, transport: httpx.AsyncBaseTransport | None = None
) -> list[Check]:
    """GET the upstream's base URL once, under its own connect timeout."""
    name = f"upstream {upstream.name}"
    timeout = httpx.Timeout(upstream.timeout_seconds, connect=upstream.connect_timeout_seconds)
    try:
        async with httpx.AsyncClient(timeout=timeout, transport=transport) as client:
            answer = await client.get(upstream.url + "/", headers=dict(upstream.headers))
    except httpx.TimeoutException:
        why = f"no answer within {upstream.connect_timeout_seconds:g} s"
        return [_unreachable(name, upstream, why)]
    except httpx.TransportError as exc:
        return [_unreachable(name, upstream, str(exc) or type(exc).__name__)]
    return [Check(GROUP, name, "ok", f"{upstream.url} answers (HTTP {answer.status_code})")]


def _unreachable(name: str, upstream: gateway_config.Upstream, why: str) -> Check:
    return Check(
        GROUP,
        name,
        "fail",
        f"{upstream.url} unreachable: {why}",
        f"start the upstream or fix upstreams.{upstream.name}.url in the gateway file",
    )
