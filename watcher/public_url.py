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
import ipaddress
import re
from typing import NamedTuple
from urllib.parse import urlsplit

VARIABLE = "WATCHER_PUBLIC_URL"
# Every URL in a 402 and an invoice starts with it; a real address is far shorter.
MAX_CHARS = 512
# A DNS name as a browser or wallet would resolve it: LDH labels, ASCII (an IDN in its
# xn-- form). urlsplit accepts any netloc (a backslash, a space, a Cyrillic look-alike
# letter) and quietly drops a tab or newline inside, so the name is checked here.
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# RFC 3986 path characters (pchar and "/"); anything else would be re-encoded, or read
# differently, by whoever follows the URL.
_DOTS = re.compile(r"(?:\.|%2[eE]){1,2}")  # ".", "..", and their encoded forms
_PATH = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*$")


class PublicUrl(NamedTuple):
    """The parts every public URL starts with: ``https``, ``api.example.com``, ``/pay``."""

    scheme: str
    netloc: str
    prefix: str  # "" or "/pay": a path the proxy strips before it reaches us


@functools.lru_cache(maxsize=8)
def parse(text: str) -> PublicUrl:
    """The URL's parts; ValueError saying what is wrong."""
    text = text.strip()
    if len(text) > MAX_CHARS:
        raise ValueError(f"is longer than {MAX_CHARS} characters")
    if not text.isascii() or any(c.isspace() or not c.isprintable() or c == "\\" for c in text):
        raise ValueError(
            "has a space, a control character, a backslash or a non-ASCII character in it "
            "(give an international name in its xn-- form)"
        )
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError("is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("is not an absolute http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("has credentials in it")
    if port == 0 or not _is_host(parts.hostname, bracketed="[" in parts.netloc):
        raise ValueError("has no valid host name, IP address or port")
    if not _PATH.fullmatch(parts.path):
        raise ValueError("has characters a URL path cannot hold (percent-encode them)")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError("has a query or fragment")
    if any(_DOTS.fullmatch(seg) for seg in parts.path.split("/")):
        raise ValueError("has . or .. in its path")
    return PublicUrl(parts.scheme, parts.netloc.lower(), parts.path.rstrip("/"))


def _is_host(host: str, *, bracketed: bool) -> bool:
    """A DNS name (LDH labels, an optional final dot), an IPv4 address, or an IPv6 one
    in brackets."""
    if bracketed:
        try:
            return ipaddress.ip_address(host).version == 6
        except ValueError:
            return False
    labels = host.removesuffix(".").split(".")
    return len(host) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


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
