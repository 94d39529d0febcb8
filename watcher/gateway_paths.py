"""Path patterns of the gateway's routes: parsing, matching, precedence, reserved paths.

A pattern is ``/`` followed by segments separated by ``/``. Each segment is

* a literal, matched exactly (case-sensitive, byte for byte as the client sent it);
* ``{name}``: exactly one non-empty segment;
* ``{name:path}``: the rest of the path, one or more non-empty segments (last only).

Paths are matched as the client sent them, still percent-encoded (the ASGI
``raw_path``), and a captured value keeps its encoding. A captured segment that is
``.`` or ``..`` (or their encoded forms), or that holds an encoded slash (``%2F``) or a
backslash (raw or ``%5C``), never matches: an upstream that decodes and normalises the
path (``..%2Fpaid`` becomes ``../paid``) would otherwise serve a route nobody paid for.

Precedence (:func:`specificity`): segment by segment from the left, a literal beats
``{name}``, which beats ``{name:path}``; the first segment that differs decides, and
two routes that tie are told apart by their order in the file (the first wins).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Methods a route may name (RFC 9110 §9 and PATCH); CONNECT and TRACE make no sense here.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Our own routes: a gateway route may not match any of these, nor anything below them.
# One entry covers the path itself and every path under it. Keep it in step with
# api/app.py: tests/integration/test_gateway_reserved.py checks every route the real app
# serves is covered here.
RESERVED = (
    "/x402",  # tokens, invoices, claims, the x402 example routes
    "/gateway",  # forward-auth (/gateway/authorize) and the charge endpoint
    "/api/v1",  # Stripe: checkout, webhook, portal, success/cancel pages
    "/healthz",
    "/readyz",
    "/health",  # aliases of /healthz and /readyz (the previous deployment's paths)
    "/ready",
    "/metrics",
    "/docs",  # FastAPI's Swagger UI (and /docs/oauth2-redirect)
    "/redoc",
    "/openapi.json",
    "/admin",
)

_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}$")
# RFC 3986 pchar: unreserved / pct-encoded / sub-delims / ":" / "@".
_LITERAL = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})*$")
_DOT = re.compile(r"^(?:\.|%2[eE])(?:\.|%2[eE])?$")
# An encoded slash or a backslash (raw or encoded) inside a captured value: many upstreams
# (nginx among them) decode it and resolve ``..%2F`` into another path, so a free route's
# ``{rest}`` could walk onto a paid upstream path. Such a value never matches.
_SLASHY = re.compile(r"%2[fF]|%5[cC]|\\")

LITERAL, ONE, REST = 0, 1, 2


@dataclass(frozen=True)
class Segment:
    """One segment of a pattern: ``kind`` is LITERAL, ONE (``{name}``) or REST (``{name:path}``)."""

    kind: int
    text: str  # the literal, or the parameter's name


def parse(pattern: str) -> tuple[tuple[Segment, ...], list[str]]:
    """A pattern's segments and the reasons it is not valid (empty when it is)."""
    if not pattern.startswith("/"):
        return (), [f"{pattern!r} does not start with /"]
    if "?" in pattern or "#" in pattern:
        return (), [f"{pattern!r} has a query or fragment; give the path only"]
    parts = pattern[1:].split("/")
    out: list[Segment] = []
    problems: list[str] = []
    seen: set[str] = set()
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        m = _PARAM.match(part)
        if m:
            name = m.group(1)
            if name in seen:
                problems.append(f"{pattern!r} names the parameter {{{name}}} twice")
            seen.add(name)
            rest = m.group(2) is not None
            if rest and not last:
                problems.append(f"{pattern!r}: {{{name}:path}} must be the last segment")
            out.append(Segment(REST if rest else ONE, name))
        elif part == "" and not last:
            problems.append(f"{pattern!r} has an empty segment (//)")
        elif "{" in part or "}" in part:
            problems.append(
                f"{pattern!r}: segment {part!r} is not a literal, {{name}} or {{name:path}}"
            )
        elif not _LITERAL.match(part):
            problems.append(
                f"{pattern!r}: segment {part!r} has characters a URL path cannot hold "
                "(percent-encode them)"
            )
        elif _DOT.match(part):
            problems.append(f"{pattern!r}: segment {part!r} is a dot segment")
        else:
            out.append(Segment(LITERAL, part))
    return tuple(out), problems


def match(segments: tuple[Segment, ...], path: str) -> dict[str, str] | None:
    """The parameters when ``path`` (raw, percent-encoded) matches, else None."""
    if not path.startswith("/"):
        return None
    parts = path[1:].split("/")
    params: dict[str, str] = {}
    for i, seg in enumerate(segments):
        if seg.kind == REST:
            rest = parts[i:]
            if not rest or any(p == "" or _DOT.match(p) or _SLASHY.search(p) for p in rest):
                return None
            params[seg.text] = "/".join(rest)
            return params
        if i >= len(parts):
            return None
        part = parts[i]
        if seg.kind == LITERAL:
            if part != seg.text:
                return None
        elif part == "" or _DOT.match(part) or _SLASHY.search(part):
            return None
        else:
            params[seg.text] = part
    return params if len(parts) == len(segments) else None


def specificity(segments: tuple[Segment, ...]) -> tuple[int, ...]:
    """The sort key of precedence: lower wins (literal 0 < {name} 1 < {name:path} 2)."""
    return tuple(seg.kind for seg in segments)


def shape(segments: tuple[Segment, ...]) -> tuple[tuple[int, str], ...]:
    """A pattern with its parameter names erased: two routes of one shape match the same paths."""
    return tuple((s.kind, s.text if s.kind == LITERAL else "") for s in segments)


def substitute(segments: tuple[Segment, ...], params: dict[str, str]) -> str:
    """The path of ``segments`` with each parameter replaced by its value, verbatim."""
    return "/" + "/".join(params[s.text] if s.kind != LITERAL else s.text for s in segments)


def reserved_collision(segments: tuple[Segment, ...]) -> str | None:
    """The reserved prefix this pattern could match (it or a path under it), or None."""
    for prefix in RESERVED:
        taken = prefix[1:].split("/")
        if _covers(segments, taken):
            return prefix
    return None


def _covers(segments: tuple[Segment, ...], taken: list[str]) -> bool:
    for i, name in enumerate(taken):
        if i >= len(segments):
            return False  # the pattern stops above the reserved path: "/api" vs "/api/v1"
        seg = segments[i]
        if seg.kind == REST:
            return True
        if seg.kind == LITERAL and seg.text != name:
            return False
    return True  # the reserved path itself, or a path under it


def is_reserved(path: str) -> bool:
    """True when a concrete path of ours is covered by :data:`RESERVED`."""
    return any(path == p or path.startswith(p + "/") for p in RESERVED)
