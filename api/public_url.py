"""Absolute URLs the API hands out: from ``WATCHER_PUBLIC_URL`` when set, else the request.

The request's own scheme and Host are what the socket saw: behind TLS termination
``http`` and whatever Host the proxy sends, and a client can put any Host it likes.
So when ``WATCHER_PUBLIC_URL`` is set (watcher/public_url.py) every URL here is built
from it, with its path prefix in front of our route's path, and the Host header is never
read. Unset, the request's URL is used as before, and in production the first such URL
logs ``public_url_unset`` once per process (``watcher doctor`` reports it too).
"""

from __future__ import annotations

import structlog
from starlette.datastructures import URL
from starlette.requests import Request

from watcher import public_url
from watcher.settings import Settings

log = structlog.get_logger(__name__)
_warned: list[bool] = []  # one warning per process, not one per 402


def configured(settings: Settings) -> public_url.PublicUrl | None:
    """The parsed ``WATCHER_PUBLIC_URL`` (validated at start), or None while unset."""
    text = settings.value("watcher_public_url")
    return None if text is None else public_url.parse(text)


def of_path(request: Request, path: str, query: str = "") -> URL:
    """The public URL of our route at ``path`` (and ``query``), as a payer must call it."""
    return _public(request, request.base_url.replace(path=path, query=query))


def of_request(request: Request) -> URL:
    """The public URL of the resource this request asked for (an x402 offer's resource)."""
    return _public(request, request.url)


def of_route(request: Request, name: str) -> str:
    """The public URL of the route named ``name`` (e.g. ``create_invoice``)."""
    return str(_public(request, request.url_for(name)))


def _public(request: Request, url: URL) -> URL:
    """``url`` (built from the request) moved under ``WATCHER_PUBLIC_URL`` when it is set."""
    settings: Settings = request.app.state.settings
    base = configured(settings)
    if base is None:
        _warn_unset(settings, request)
        return url
    return url.replace(scheme=base.scheme, netloc=base.netloc, path=base.prefix + url.path)


def _warn_unset(settings: Settings, request: Request) -> None:
    if settings.production and not _warned:
        _warned.append(True)
        log.warning(
            "public_url_unset",
            host=request.headers.get("host"),
            fix=f"set {public_url.VARIABLE} to the https:// address payers reach the API at; "
            "until then URLs in 402s and invoices are built from each request's Host header",
        )


def settings_url(settings: Settings, field: str) -> str:
    """A URL setting that points back at us by default (the Stripe return URLs): as set,
    or, while left at its default and ``WATCHER_PUBLIC_URL`` is set, the default's path
    under the public URL (the default's 127.0.0.1:8000 is no payer's address)."""
    value: str = getattr(settings, field)
    base = configured(settings)
    if base is None or field in settings.model_fields_set:
        return value
    path = URL(value).path
    return str(URL(scheme=base.scheme, netloc=base.netloc, path=base.prefix + path))
