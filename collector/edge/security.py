"""Headers on every answer of the collector's HTTP side, and the API docs served locally.

A strict Content-Security-Policy (no inline script or style anywhere: the pages load
``/static`` files only), no framing, no MIME sniffing, no referrer, ``no-store`` on
everything but the static files (pages and API answers carry personal data and
tokens' results), HSTS in production. Swagger UI is served from the installed
``swagger-ui-bundle`` package: no CDN, so it works in a centre without internet.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
STATIC = Path(__file__).resolve().parent / "web" / "static"


def install(app: FastAPI, *, production: bool) -> None:
    """Security headers on every answer, /static, and Swagger UI at /docs."""

    @app.middleware("http")
    async def headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        try:
            response = await call_next(request)
        except Exception:  # a defect: a plain 500 that says nothing, with every header
            log.exception("unhandled error answering %s %s", request.method, request.url.path)
            response = PlainTextResponse("Internal Server Error", status_code=500)
        h = response.headers
        h["Content-Security-Policy"] = CSP
        h["X-Frame-Options"] = "DENY"
        h["X-Content-Type-Options"] = "nosniff"
        h["Referrer-Policy"] = "no-referrer"
        h["Cross-Origin-Opener-Policy"] = "same-origin"
        if "cache-control" not in h and not request.url.path.startswith(
            ("/static/", "/docs/assets/")
        ):
            h["Cache-Control"] = "no-store"  # unless a route chose (public open data)
        if production:
            h["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
        return response

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # the package is part of the collector extra; without it, no docs
        return
    app.mount("/docs/assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            "<title>Gnahat collector API</title>"
            '<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>'
            '<body><main id="swagger-ui"></main>'
            '<script src="/docs/assets/swagger-ui-bundle.js"></script>'
            '<script src="/static/swagger-init.js"></script></body></html>'
        )
