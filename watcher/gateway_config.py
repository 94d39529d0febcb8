"""The gateway's file: upstreams and priced routes, read from TOML and validated once.

``WATCHER_GATEWAY_CONFIG`` names the file; :func:`load` parses it (stdlib ``tomllib``)
into frozen dataclasses or raises :class:`GatewayConfigError` listing *every* problem,
each as ``<file>: <table path> (line N): what; how to fix``. tomllib gives a line for a
syntax error only; for other problems the line is that of the table's header
(``[[routes]]`` number i, ``[upstreams.name]``), found by scanning the text.

Secrets and headers never sit in the file: a value is ``{ env = "NAME" }`` and the
variable must be set and non-empty. Prices are strings of dollars (a TOML float would
round) turned into USDC base units by ``money.usd_to_units``. Path patterns, matching
and precedence live in :mod:`watcher.gateway_paths`; docs/gateway.md ("Configuration
file") is the operator's reference.
"""

from __future__ import annotations

import functools
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from watcher import errors, gateway_paths, stripe_tiers
from watcher import gateway_checks as checks

if TYPE_CHECKING:
    from watcher.settings import Settings

RAILS = frozenset({"token", "x402", "subscription"})
FREE_RAIL = "free"
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_CONNECT_TIMEOUT_SECONDS = 5.0
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


class GatewayConfigError(errors.ConfigError):
    """The gateway file is invalid."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        super().__init__(problems)
        self.path = Path(path)
        lines = "\n".join(f"  - {p}" for p in problems)
        self.args = (f"invalid gateway file {path} ({len(problems)} problem(s)):\n{lines}",)

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Upstream:
    """A backend the gateway forwards to. ``url`` has no trailing slash."""

    name: str
    url: str
    # Values from the environment (private API keys): kept out of repr() and so of logs.
    headers: Mapping[str, str] = field(repr=False)
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    connect_timeout_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS
    secret: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Route:
    """One priced (or free) route. A free route has ``rails == {"free"}`` and price 0."""

    index: int
    methods: frozenset[str]
    path: str
    upstream: str
    upstream_path: str
    free: bool
    price_units: int
    calls: int | None
    rails: frozenset[str]
    tiers: frozenset[str] | None
    rate_limit_per_minute: int | None
    max_body_bytes: int
    stream_request: bool
    description: str | None

    @property
    def label(self) -> str:
        """``"GET /v1/forecast/{city}"`` (several methods: ``"GET,HEAD /..."``, sorted)."""
        return f"{','.join(sorted(self.methods))} {self.path}"

    # Parsed once per route (cached_property writes the instance dict, frozen or not).
    @functools.cached_property
    def segments(self) -> tuple[gateway_paths.Segment, ...]:
        return gateway_paths.parse(self.path)[0]

    @functools.cached_property
    def upstream_segments(self) -> tuple[gateway_paths.Segment, ...]:
        return gateway_paths.parse(self.upstream_path)[0]

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The path parameters (still percent-encoded) when method and raw path match."""
        if method not in self.methods:
            return None
        return gateway_paths.match(self.segments, path)

    def target(self, params: Mapping[str, str], query: str) -> str:
        """The upstream path with ``params`` put in verbatim, plus ``?query`` when non-empty."""
        path = gateway_paths.substitute(self.upstream_segments, dict(params))
        return f"{path}?{query}" if query else path


@dataclass(frozen=True)
class GatewayConfig:
    """The parsed file: upstreams by name, routes in file order."""

    path: Path
    upstreams: Mapping[str, Upstream]
    routes: tuple[Route, ...]

    def find(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The most specific route matching ``method`` and the raw ``path``, with its params.

        Literal segments beat ``{name}``, which beats ``{name:path}``, from the left; a tie
        goes to the route written first. None: no route (the gateway answers 404).
        """
        best: tuple[tuple[int, ...], int, Route, dict[str, str]] | None = None
        for route in self.routes:
            params = route.match(method, path)
            if params is None:
                continue
            key = gateway_paths.specificity(route.segments)
            if best is None or (key, route.index) < (best[0], best[1]):
                best = (key, route.index, route, params)
        return None if best is None else (best[2], best[3])


def load(
    path: Path | str, settings: Settings, environ: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Read and validate the gateway file; raises GatewayConfigError listing every problem.

    ``environ`` (default ``os.environ``) supplies the ``{ env = "NAME" }`` values.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GatewayConfigError(path, [f"{path}: cannot read the file: {exc}"]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GatewayConfigError(path, [f"{path}: not valid TOML: {exc}"]) from exc
    ctx = checks.Context(
        path=path,
        lines=checks.header_lines(text),
        env=os.environ if environ is None else environ,
        settings=settings,
    )
    config = _build(data, ctx)
    if ctx.problems:
        raise GatewayConfigError(path, ctx.problems)
    return config


def _build(data: dict[str, Any], ctx: checks.Context) -> GatewayConfig:
    ctx.unknown_keys(data, {"upstreams", "routes"}, "")
    upstreams: dict[str, Upstream] = {}
    raw_ups = data.get("upstreams", {})
    if not isinstance(raw_ups, dict) or not raw_ups:
        ctx.add("upstreams", "no upstream; add an [upstreams.<name>] table with its url")
        raw_ups = {}
    for name, table in raw_ups.items():
        up = _upstream(name, table, ctx)
        if up is not None:
            upstreams[name] = up
    raw_routes = data.get("routes", [])
    if not isinstance(raw_routes, list) or not raw_routes:
        ctx.add("routes", "no route; add a [[routes]] table")
        raw_routes = []
    routes = []
    for i, table in enumerate(raw_routes):
        route = _route(i, table, set(raw_ups), ctx)
        if route is not None:
            routes.append(route)
    checks.duplicates(routes, ctx)
    return GatewayConfig(ctx.path, MappingProxyType(upstreams), tuple(routes))


_UPSTREAM_KEYS = {"url", "timeout_seconds", "connect_timeout_seconds", "secret", "headers"}


def _upstream(name: str, table: Any, ctx: checks.Context) -> Upstream | None:
    where = f"upstreams.{name}"
    if not isinstance(table, dict):
        ctx.add(where, "must be a table ([upstreams.<name>] with url = ...)")
        return None
    before = len(ctx.problems)
    ctx.unknown_keys(table, _UPSTREAM_KEYS, where)
    url = checks.upstream_url(table.get("url"), f"{where}.url", ctx)
    timeout = ctx.seconds(table, "timeout_seconds", where, DEFAULT_TIMEOUT_SECONDS, 3600)
    connect = ctx.seconds(
        table, "connect_timeout_seconds", where, DEFAULT_CONNECT_TIMEOUT_SECONDS, 600
    )
    headers = checks.headers(table.get("headers", {}), f"{where}.headers", ctx)
    secret = checks.upstream_secret(table.get("secret"), f"{where}.secret", ctx)
    if len(ctx.problems) > before or url is None:
        return None
    return Upstream(name, url, MappingProxyType(headers), timeout, connect, secret)


_ROUTE_KEYS = {
    "method",
    "path",
    "upstream",
    "upstream_path",
    "price_usd",
    "free",
    "rails",
    "tiers",
    "rate_limit_per_minute",
    "max_body_bytes",
    "stream_request",
    "description",
}


def _route(i: int, table: Any, upstream_names: set[str], ctx: checks.Context) -> Route | None:
    where = f"routes[{i}]"
    if not isinstance(table, dict):
        ctx.add(where, "must be a table ([[routes]])")
        return None
    before = len(ctx.problems)
    ctx.unknown_keys(table, _ROUTE_KEYS, where)
    methods = checks.methods(table.get("method"), f"{where}.method", ctx)
    path = checks.route_path(table.get("path"), f"{where}.path", ctx)
    upstream = table.get("upstream")
    if not isinstance(upstream, str) or upstream not in upstream_names:
        known = ", ".join(sorted(upstream_names)) or "none"
        ctx.add(f"{where}.upstream", f"{upstream!r} is not an upstream (known: {known})")
    upstream_path = checks.upstream_path(table.get("upstream_path", path), path, where, ctx)
    free = ctx.boolean(table, "free", where, False)
    rails = checks.rails(table, where, free, ctx)
    price, calls = checks.price(table, where, free, rails, ctx)
    tiers = checks.tiers(table, where, rails, stripe_tiers.sold(ctx.settings), ctx)
    rate = ctx.positive_int(table, "rate_limit_per_minute", where, None)
    max_body = ctx.positive_int(table, "max_body_bytes", where, DEFAULT_MAX_BODY_BYTES)
    stream = ctx.boolean(table, "stream_request", where, False)
    description = table.get("description")
    if description is not None and not isinstance(description, str):
        ctx.add(f"{where}.description", "must be a string")
    if len(ctx.problems) > before or path is None or upstream_path is None:
        return None
    return Route(
        index=i,
        methods=methods,
        path=path,
        upstream=str(upstream),
        upstream_path=upstream_path,
        free=free,
        price_units=price,
        calls=calls,
        rails=rails,
        tiers=tiers,
        rate_limit_per_minute=rate,
        max_body_bytes=max_body if max_body is not None else DEFAULT_MAX_BODY_BYTES,
        stream_request=stream,
        description=description,
    )


def from_settings(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> GatewayConfig | None:
    """The file ``WATCHER_GATEWAY_CONFIG`` names, loaded and validated; None when unset.

    Called by ``watcher run`` / ``watcher api`` before anything starts (a bad file exits 2).
    """
    path = settings.watcher_gateway_config
    if path is None or not str(path).strip():
        return None
    return load(path, settings, environ)
