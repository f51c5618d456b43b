"""The static pages and their files (web/), served the same way by every room's routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from rtc.http.errors import ApiError

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
"""The project's web/ folder."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def page(name: str) -> Handler:
    """A handler answering web/``name``, never cached stale by the browser."""
    path = WEB_DIR / name

    async def handler(_: web.Request) -> web.StreamResponse:
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    return handler


async def static_file(request: web.Request) -> web.StreamResponse:
    """GET /static/{filename}: a file of the pages; never one outside WEB_DIR.

    Not aiohttp's add_static: its 404 for a missing file is an empty octet-stream answer that
    no middleware sees, and every error here is JSON.
    """
    root = WEB_DIR.resolve()
    try:
        path = (root / request.match_info["filename"]).resolve()
    except (OSError, ValueError):  # e.g. a NUL byte in the name
        raise ApiError(404, "no such file") from None
    if not path.is_relative_to(root) or not path.is_file():
        raise ApiError(404, "no such file")
    return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


async def favicon(_: web.Request) -> web.StreamResponse:
    """GET /favicon.ico: the pages' icon (an SVG; browsers take it whatever the name says),
    so a browser opening any URL here, a JSON answer too, gets no 404."""
    return web.FileResponse(
        WEB_DIR / "favicon.svg",
        headers={"Content-Type": "image/svg+xml", "Cache-Control": "max-age=86400"},
    )
