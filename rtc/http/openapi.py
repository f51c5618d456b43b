"""The OpenAPI 3.1 description of the HTTP API, served at ``GET /api/openapi.json``.

The operations are written here by hand (what each accepts and answers), but the document is
assembled from the application's router, so it lists exactly the routes that exist. A route
with no description here still appears, marked ``x-undocumented``; :func:`undocumented` lists
those, and a test keeps that list empty, so a new endpoint cannot ship without its entry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from config import AppConfig
from rtc.http.auth import STATE_CHANGING, guarded, viewer_path
from rtc.http.openapi_jobs import job_operations
from rtc.http.openapi_operations import operations
from rtc.http.openapi_schemas import Operation, error_response, schemas

SKIPPED_METHODS = ("HEAD",)
"""aiohttp adds HEAD to every GET. (CORS preflights are answered by middleware; OPTIONS
routes registered on purpose, like WHEP's, are described.)"""


def route_paths(app: web.Application) -> list[tuple[str, str]]:
    """Every (method, OpenAPI path) the router serves, HEAD and OPTIONS left out."""
    found: list[tuple[str, str]] = []
    for route in app.router.routes():
        if route.method in SKIPPED_METHODS or route.resource is None:
            continue
        path = route.resource.canonical
        if isinstance(route.resource, web.StaticResource):  # in case add_static comes back
            path = path.rstrip("/") + "/{filename}"
        if (route.method, path) not in found:
            found.append((route.method, path))
    return found


def described(config: AppConfig) -> dict[tuple[str, str], Operation]:
    """Every operation described, by (method, OpenAPI path)."""
    return operations(config) | job_operations(config)


def undocumented(app: web.Application, config: AppConfig) -> list[tuple[str, str]]:
    """Routes of ``app`` this module has no description for (a test keeps this empty)."""
    known = described(config)
    return [key for key in route_paths(app) if key not in known]


def build_spec(app: web.Application, config: AppConfig) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``'s routes."""
    known = described(config)
    paths: dict[str, dict[str, Operation]] = {}
    for method, path in route_paths(app):
        operation = dict(
            known.get((method, path))
            or {
                "summary": "undocumented route",
                "x-undocumented": True,
                "responses": {"default": {"description": "see the source"}},
            }
        )
        if "requestBody" in operation:
            operation["responses"] = {
                **operation["responses"],
                "415": error_response("a Content-Type the operation does not take"),
            }
        if method in STATE_CHANGING:
            operation["responses"] = {
                **operation["responses"],
                "403": error_response("sent by a page of a foreign origin (see --cors-origin)"),
            }
        if guarded(method, path) and (
            config.http.token or (config.http.viewer_token and viewer_path(path))
        ):
            operation["security"] = [{"bearer": []}]
            operation["responses"] = {
                **operation["responses"],
                "401": error_response("missing or wrong API token"),
            }
        paths.setdefault(path, {})[method.lower()] = operation
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Talking Avatar",
            "version": "0.1.0",
            "description": "Realtime lip-synced avatar server. Every error is JSON "
            '{"error": ...}; see docs/api.md.',
        },
        "paths": paths,
        "components": {"schemas": schemas(config)},
    }
    if config.http.token:
        spec["components"]["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "the server's --token; ?token= works too",
            }
        }
    return spec


def openapi_handler(config: AppConfig) -> Callable[[web.Request], Awaitable[web.Response]]:
    """GET /api/openapi.json (built once, on the first request: the routes are fixed then)."""
    cache: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.Response:
        if "spec" not in cache:
            cache["spec"] = build_spec(request.app, config)
        return web.json_response(cache["spec"])

    return handler
