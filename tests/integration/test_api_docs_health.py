"""/docs and /redoc work offline (every asset from this server), and /health, /ready answer
as /healthz, /readyz."""

from __future__ import annotations

import re

import pytest

from devkit import api_support
from watcher import db

# Every URL a page makes the browser load: src=, href=, spec-url=, and the config's "url".
_REFS = re.compile(r'(?:src|href|spec-url)="([^"]+)"|"url": "([^"]+)"')


def _refs(text: str) -> list[str]:
    return [a or b for a, b in _REFS.findall(text)]


CONTENT_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
    ".json": ("application/json",),
}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_document_pages_load_nothing_from_another_host(pool: db.Pool, page: str) -> None:
    async with api_support.client(api_support.app_for(pool)) as http:
        r = await http.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert not re.search(r"https?://", r.text), r.text  # no CDN, no font host
        assert "<script>" not in r.text  # no inline script: the CSP allows this origin only
        assert "script-src" not in r.headers["content-security-policy"]  # default-src rules
        assert "default-src 'self'" in r.headers["content-security-policy"]
        pending, seen = _refs(r.text), set()
        assert pending, r.text
        while pending:  # the page's assets, and what the init script loads
            url = pending.pop()
            if url in seen:
                continue
            seen.add(url)
            assert url.startswith("/"), url
            asset = await http.get(url)
            assert asset.status_code == 200, url
            suffix = url[url.rfind(".") :]
            kind = asset.headers["content-type"].split(";")[0]
            assert kind in CONTENT_TYPES[suffix], (url, kind)
            if url == "/docs/init.js":
                assert not re.search(r"https?://", asset.text), asset.text
                pending += _refs(asset.text)
        assert "/openapi.json" in seen


async def test_the_swagger_ui_shipped_renders_the_openapi_version_we_write(
    pool: db.Pool,
) -> None:
    # Swagger UI 4 (swagger-ui-bundle's) refuses "openapi: 3.1.x" ("Unable to render this
    # definition"); FastAPI writes 3.1, so the bundle served must know OpenAPI 3.1 (Swagger
    # UI 5 and later: its isOAS31 selector).
    async with api_support.client(api_support.app_for(pool)) as http:
        spec = (await http.get("/openapi.json")).json()
        assert spec["openapi"].startswith("3.1.")
        bundle = (await http.get("/docs/assets/swagger-ui-bundle.js")).text
        assert "isOAS31" in bundle
        assert "/docs" not in {p for p in spec["paths"]}  # the pages stay out of the schema


async def test_an_unknown_asset_is_our_404(pool: db.Pool) -> None:
    async with api_support.client(api_support.app_for(pool)) as http:
        r = await http.get("/docs/assets/nope.js")
        assert r.status_code == 404 and r.json()["error"] == "not_found"


async def test_health_and_ready_are_aliases_of_healthz_and_readyz(pool: db.Pool) -> None:
    async with api_support.client(api_support.app_for(pool)) as http:
        for alias, name in (("/health", "/healthz"), ("/ready", "/readyz")):
            a, b = await http.get(alias), await http.get(name)
            assert (a.status_code, a.json()) == (b.status_code, b.json()) == (200, b.json())
        assert (await http.get("/ready")).json() == {"status": "ready", "database": "ok"}
        assert (await http.get("/health")).json() == {"status": "ok"}


async def test_ready_says_503_as_readyz_does_when_the_database_is_gone(
    database_url: str,
) -> None:
    gone = await db.create_pool(database_url, min_size=1, max_size=1)
    await gone.close()  # every query on it now fails as an unreachable server does
    async with api_support.client(api_support.app_for(gone)) as http:
        a, b = await http.get("/ready"), await http.get("/readyz")
        assert a.status_code == b.status_code == 503
        assert a.json() == b.json()
        assert a.json()["status"] == "unavailable"
