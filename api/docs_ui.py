"""The browsable API documents (/docs: Swagger UI, /redoc: ReDoc), served offline.

FastAPI's own pages load their scripts from a CDN, so on a machine without internet they
are blank. Ours load the copies that the ``fastapi-offline`` wheel ships (Swagger UI 5,
which renders the OpenAPI 3.1 document FastAPI writes, and ReDoc), mounted under
``/docs/assets``. The pages carry no inline script, so they are served under a
Content-Security-Policy that allows this origin only.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"
# The wheel's folder of vendored files (swagger-ui-bundle.js, swagger-ui.css,
# redoc.standalone.js, favicon.png).
ASSETS_PACKAGE = ("fastapi_offline", "static")
# Swagger UI and ReDoc set inline styles and draw icons from data: URIs; ReDoc's search
# runs in a worker built from a blob: URL. Scripts: this origin only.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

_SWAGGER_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="icon" href="{assets}/favicon.png">
<link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{root}/docs/init.js"></script>
</body>
</html>
"""

_REDOC_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="icon" href="{assets}/favicon.png">
</head>
<body>
<redoc spec-url="{root}{openapi}"></redoc>
<script src="{assets}/redoc.standalone.js"></script>
</body>
</html>
"""


def install(app: FastAPI) -> None:
    """Serve /docs and /redoc from the packaged assets; the app must be built with
    ``docs_url=None, redoc_url=None`` so FastAPI's CDN pages are not registered."""
    openapi = app.openapi_url or "/openapi.json"
    app.mount(ASSETS, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-assets")

    def page(template: str, request: Request, title: str) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        html = template.format(title=title, assets=root + ASSETS, root=root, openapi=openapi)
        return HTMLResponse(html, headers={"Content-Security-Policy": CSP})

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return page(_SWAGGER_PAGE, request, f"{app.title} - Swagger UI")

    @app.get("/docs/init.js", include_in_schema=False)
    async def swagger_init(request: Request) -> Response:
        # The settings FastAPI's own page passes inline, as a script of this origin.
        root = str(request.scope.get("root_path", "")).rstrip("/")
        config = {
            "url": root + openapi,
            "dom_id": "#swagger-ui",
            "layout": "BaseLayout",
            "deepLinking": True,
            "showExtensions": True,
            "showCommonExtensions": True,
        }
        presets = "[SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset]"
        script = (
            f"window.ui = SwaggerUIBundle(Object.assign({json.dumps(config)}, "
            f"{{presets: {presets}}}));\n"
        )
        return Response(script, media_type="text/javascript")

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return page(_REDOC_PAGE, request, f"{app.title} - ReDoc")
