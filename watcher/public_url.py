"""``WATCHER_PUBLIC_URL``: the address payers reach the API at, checked and taken apart.

Behind TLS termination the API sees ``http://127.0.0.1:8000`` (or whatever Host the
proxy forwards), so URLs built from the request would send payers to the wrong place.
When the variable is set, api/public_url.py builds every absolute URL the API hands out
from it; unset, from the request (development's behaviour). Checked at start
(:func:`problems`, run by ``Settings.problems``): an absolute http(s) URL, no query,
fragment or credentials, a path prefix allowed; https only in production, since a
token bought there would otherwise travel in clear.
"""

from __future__ import annotations

import functools
from typing import NamedTuple
from urllib.parse import urlsplit

VARIABLE = "WATCHER_PUBLIC_URL"


class PublicUrl(NamedTuple):
    """The parts every public URL starts with: ``https``, ``api.example.com``, ``/pay``."""

    scheme: str
    netloc: str
    prefix: str  # "" or "/pay": a path the proxy strips before it reaches us


@functools.lru_cache(maxsize=8)
def parse(text: str) -> PublicUrl:
    """The URL's parts; ValueError saying what is wrong."""
    try:
        parts = urlsplit(text.strip())
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise ValueError("is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("is not an absolute http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("has credentials in it")
    if parts.query or parts.fragment or text.strip().endswith(("?", "#")):
        raise ValueError("has a query or fragment")
    if any(seg in (".", "..") for seg in parts.path.split("/")):
        raise ValueError("has . or .. in its path")
    return PublicUrl(parts.scheme, parts.netloc.lower(), parts.path.rstrip("/"))


def problems(text: str | None, production: bool) -> list[str]:
    """Why ``WATCHER_PUBLIC_URL`` must not start, as ``VARIABLE: what; how to fix``."""
    if text is None:
        return []
    try:
        url = parse(text)
    except ValueError as exc:
        return [
            f"{VARIABLE}: {_shown(text)} {exc}; give the address payers reach the "
            "API at, e.g. https://api.example.com or https://example.com/pay"
        ]
    if production and url.scheme != "https":
        return [
            f"{VARIABLE}: {_shown(text)} is http in production (tokens and payment "
            "headers would travel in clear); give the https:// address your TLS proxy serves"
        ]
    return []


def _shown(text: str) -> str:
    """What the operator typed, quoted; only the part after any credentials."""
    return repr(text.strip().rpartition("@")[2] if "@" in text else text.strip())
