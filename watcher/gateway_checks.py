"""The checks behind ``gateway_config.load``: each collects problems instead of raising.

Every problem is ``<file>: <table path> (line N): what; how to fix`` so the operator
fixes the whole file in one pass (see :class:`Context`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

from watcher import gateway_paths, keys, money, stripe_tiers

if TYPE_CHECKING:
    from watcher.gateway_config import Route
    from watcher.settings import Settings

SECRET_MIN_BITS = 256
SECRET_HOWTO = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
RAILS = ("token", "x402", "subscription")

_ROUTES_HEADER = re.compile(r"^\s*\[\[\s*routes\s*\]\]")
_UPSTREAM_HEADER = re.compile(r"^\s*\[\s*upstreams\s*\.\s*\"?([^\]\".]+)\"?\s*\]")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Headers the gateway owns or that describe one hop only (RFC 9110 §7.6.1): never injected.
_FORBIDDEN_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
        "trailer",
        "proxy-authorization",
        "proxy-authenticate",
    }
)


def header_lines(text: str) -> dict[str, int]:
    """Line numbers (1-based) of each table header: ``routes[i]`` and ``upstreams.name``."""
    out: dict[str, int] = {}
    count = 0
    for n, line in enumerate(text.splitlines(), start=1):
        if _ROUTES_HEADER.match(line):
            out[f"routes[{count}]"] = n
            count += 1
        elif m := _UPSTREAM_HEADER.match(line):
            out.setdefault(f"upstreams.{m.group(1).strip()}", n)
    return out


@dataclass
class Context:
    """What every check needs, and the problems found so far."""

    path: Path
    lines: dict[str, int]
    env: Mapping[str, str]
    settings: Settings
    problems: list[str] = field(default_factory=list)

    def add(self, where: str, why: str) -> None:
        head = re.match(r"^(routes\[\d+\]|upstreams\.[^.]+)", where)
        line = self.lines.get(head.group(1)) if head else None
        at = f" (line {line})" if line else ""
        self.problems.append(f"{self.path}: {where}{at}: {why}")

    def unknown_keys(self, table: Mapping[str, Any], known: Iterable[str], where: str) -> None:
        allowed = set(known)
        for key in table:
            if key not in allowed:
                name = f"{where}.{key}" if where else key
                self.add(name, f"unknown key (known: {', '.join(sorted(allowed))})")

    def boolean(self, table: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            self.add(f"{where}.{key}", f"must be true or false, not {value!r}")
            return default
        return value

    def positive_int(
        self, table: Mapping[str, Any], key: str, where: str, default: int | None
    ) -> int | None:
        value = table.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.add(f"{where}.{key}", f"must be a whole number above 0, not {value!r}")
            return default
        return value

    def seconds(
        self, table: Mapping[str, Any], key: str, where: str, default: float, most: float
    ) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= most:
            self.add(f"{where}.{key}", f"must be seconds above 0 and at most {most:g}")
            return default
        return float(value)

    def from_env(self, value: Any, where: str) -> str | None:
        """The value of ``{ env = "NAME" }``; a literal or an unset variable is a problem."""
        if not isinstance(value, dict):
            self.add(
                where,
                'write { env = "NAME" } and export NAME; values are never written in the file',
            )
            return None
        self.unknown_keys(value, {"env"}, where)
        name = value.get("env")
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            self.add(f"{where}.env", f"{name!r} is not an environment variable name")
            return None
        text = self.env.get(name, "")
        if not text.strip():
            self.add(where, f"environment variable {name} is not set (or empty); export it")
            return None
        return text


def _bad_port(parts: SplitResult) -> bool:
    """True when the URL's port is not a number in range (``.port`` raises then)."""
    try:
        _ = parts.port
    except ValueError:
        return True
    return False


def upstream_url(value: Any, where: str, ctx: Context) -> str | None:
    if not isinstance(value, str):
        ctx.add(where, 'missing; give the base URL, e.g. url = "http://127.0.0.1:9000"')
        return None
    parts = urlsplit(value)
    why = "has a bad port" if _bad_port(parts) else None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        why = "must be an http:// or https:// URL with a host"
    elif parts.query or parts.fragment or value.endswith(("?", "#")):
        why = "must have no query or fragment (put them in the routes)"
    elif parts.username is not None or parts.password is not None:
        why = "must not carry credentials; inject them with [headers] from the environment"
    if why:
        # Shown without path, query or credentials (they may hold a key).
        ctx.add(where, f"{parts.scheme}://{parts.hostname or '?'}/... {why}")
        return None
    return value.rstrip("/")


def headers(table: Any, where: str, ctx: Context) -> dict[str, str]:
    if not isinstance(table, dict):
        ctx.add(where, 'must be a table of Name = { env = "VARIABLE" }')
        return {}
    out: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in table.items():
        at = f"{where}.{name}"
        if not _HEADER_NAME.match(name):
            ctx.add(at, f"{name!r} is not a header name")
            continue
        low = name.lower()
        if low in seen:
            ctx.add(at, f"{name} is given twice (header names ignore case)")
            continue
        seen.add(low)
        if low in _FORBIDDEN_HEADERS or low.startswith("x-payment-"):
            ctx.add(at, f"{name} is set by the gateway or by HTTP itself; it cannot be injected")
            continue
        text = ctx.from_env(value, at)
        if text is not None and ("\r" in text or "\n" in text or "\0" in text):
            ctx.add(at, "the variable's value holds a line break; a header cannot")
        elif text is not None:
            out[name] = text
    return out


def upstream_secret(value: Any, where: str, ctx: Context) -> bytes | None:
    """The HMAC key: ``{ env = ... }`` in the file, else WATCHER_GATEWAY_SECRET, else None."""
    if value is not None:
        text = ctx.from_env(value, where)
        if text is None:
            return None
        if ctx.settings.production and keys.estimate_key_bits(text) < SECRET_MIN_BITS:
            ctx.add(
                where,
                f"{value.get('env')} is too weak (~{keys.estimate_key_bits(text):.0f} bits, "
                f"need {SECRET_MIN_BITS}); {SECRET_HOWTO}",
            )
        return text.encode("utf-8")
    default = ctx.settings.value("watcher_gateway_secret")
    if default is not None:
        return default.encode("utf-8")
    if ctx.settings.production:
        ctx.add(
            where,
            "no signing secret in production: set WATCHER_GATEWAY_SECRET or "
            f'secret = {{ env = "NAME" }}; {SECRET_HOWTO}',
        )
    return None


def methods(value: Any, where: str, ctx: Context) -> frozenset[str]:
    items = value if isinstance(value, list) else [value]
    if value is None or not items:
        ctx.add(where, 'missing; e.g. method = "GET" or method = ["GET", "HEAD"]')
        return frozenset()
    known = ", ".join(sorted(gateway_paths.METHODS))
    good = [m for m in items if isinstance(m, str) and m in gateway_paths.METHODS]
    for m in items:
        if m not in good:
            ctx.add(where, f"{m!r} is not a standard method in upper case ({known})")
    return frozenset(good)


def route_path(value: Any, where: str, ctx: Context) -> str | None:
    if not isinstance(value, str):
        ctx.add(where, 'missing; e.g. path = "/v1/forecast/{city}"')
        return None
    segments, problems = gateway_paths.parse(value)
    for p in problems:
        ctx.add(where, p)
    if problems:
        return None
    taken = gateway_paths.reserved_collision(segments)
    if taken is not None:
        ctx.add(where, f"{value!r} collides with our own {taken} routes; use another prefix")
        return None
    return value


def upstream_path(value: Any, path: str | None, where: str, ctx: Context) -> str | None:
    at = f"{where}.upstream_path"
    if path is None:
        return None  # the path's own problem is reported
    if not isinstance(value, str):
        ctx.add(at, "must be a string path starting with /")
        return None
    segments, problems = gateway_paths.parse(value)
    for p in problems:
        ctx.add(at, p)
    known = {s.text for s in gateway_paths.parse(path)[0] if s.kind != gateway_paths.LITERAL}
    for s in segments:
        if s.kind != gateway_paths.LITERAL and s.text not in known:
            ctx.add(at, f"{{{s.text}}} is not a parameter of path {path!r}")
            problems.append(s.text)
    return None if problems else value


def rails(table: Mapping[str, Any], where: str, free: bool, ctx: Context) -> frozenset[str]:
    value = table.get("rails")
    if free:
        if value is not None:
            ctx.add(f"{where}.rails", "a free route takes no payment; remove rails")
        return frozenset({"free"})
    if value is None:
        return frozenset(RAILS)
    if not isinstance(value, list) or not value:
        ctx.add(f"{where}.rails", f"must be a non-empty list of {', '.join(RAILS)}")
        return frozenset()
    for r in value:
        if r not in RAILS:
            ctx.add(f"{where}.rails", f"{r!r} is not a rail ({', '.join(RAILS)})")
    return frozenset(r for r in value if r in RAILS)


def price(
    table: Mapping[str, Any], where: str, free: bool, rails: frozenset[str], ctx: Context
) -> tuple[int, int | None]:
    """``(price_units, calls)``; calls is None when the price is not whole calls."""
    at = f"{where}.price_usd"
    value = table.get("price_usd")
    if free:
        if value is not None:
            ctx.add(at, "a route is free = true or has a price, not both")
        return 0, 0
    if value is None:
        ctx.add(at, 'missing; give a price such as price_usd = "0.30", or set free = true')
        return 0, None
    if not isinstance(value, str):
        ctx.add(at, f'must be a string of dollars such as "0.30", not the TOML number {value!r}')
        return 0, None
    try:
        units = money.usd_to_units(Decimal(value.strip()))
    except (InvalidOperation, ValueError) as exc:
        why = str(exc) if isinstance(exc, ValueError) and str(exc) else "is not a number"
        ctx.add(at, f"{value!r} {why}; give dollars with at most 6 decimals")
        return 0, None
    if units <= 0:
        ctx.add(at, f"{value!r} must be above 0; a route that costs nothing is free = true")
        return 0, None
    per_call = ctx.settings.price_per_call_units
    calls = units // per_call if per_call > 0 and units % per_call == 0 else None
    metered = sorted(rails & {"token", "subscription"})
    if calls is None and metered:
        method = table.get("method")
        shown = ",".join(map(str, method)) if isinstance(method, list) else method
        label = f"{shown} {table.get('path')}"
        ctx.add(
            at,
            f"{value!r} on {label} is not a whole number of calls at X402_PRICE_PER_CALL="
            f"{money.usd(per_call)} (the {' and '.join(metered)} rails charge whole calls); "
            f'set rails = ["x402"] or a multiple of {money.usd(per_call)}',
        )
    return units, calls


def tiers(
    table: Mapping[str, Any],
    where: str,
    rails: frozenset[str],
    sold: frozenset[str],
    ctx: Context,
) -> frozenset[str] | None:
    at = f"{where}.tiers"
    value = table.get("tiers")
    if value is None:
        return None
    if "subscription" not in rails:
        ctx.add(at, 'tiers need the subscription rail; add "subscription" to rails or remove')
        return None
    if not isinstance(value, list) or not value:
        ctx.add(at, f"must be a non-empty list of tiers ({', '.join(stripe_tiers.TIERS)})")
        return None
    for t in value:
        if t not in stripe_tiers.TIERS:
            ctx.add(at, f"{t!r} is not a tier ({', '.join(stripe_tiers.TIERS)})")
        elif t not in sold:
            ctx.add(at, f"{t!r} is not sold: set STRIPE_PRICE_ID_{t.upper()} or remove it")
    return frozenset(t for t in value if t in stripe_tiers.TIERS)


def duplicates(routes: list[Route], ctx: Context) -> None:
    """Two routes sharing a method and a pattern shape (names aside) would shadow each other."""
    seen: dict[tuple[str, Any], int] = {}
    for route in routes:
        shape = gateway_paths.shape(route.segments)
        for method in sorted(route.methods):
            first = seen.setdefault((method, shape), route.index)
            if first != route.index:
                ctx.add(
                    f"routes[{route.index}].path",
                    f"{method} {route.path} matches the same paths as routes[{first}]; "
                    "remove one or make them differ",
                )
                break
