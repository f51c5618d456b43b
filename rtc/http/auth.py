"""Access control: an optional bearer token on control endpoints, and CORS closed by default.

Without a token the server trusts whoever can reach it (it listens on 127.0.0.1 by default).
With ``--token`` (or ``AVATAR_TOKEN``) every request that makes the avatar do something, or
reads a session's events or recordings, needs ``Authorization: Bearer <token>``. Browsers'
EventSource and OBS/viewer pages cannot set headers, so ``?token=`` is accepted as well.
"""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Middleware

from rtc.http.errors import Handler, json_error

PUBLIC_GETS = (
    "/api/languages",
    "/api/voices",
    "/api/engines",
    "/api/avatars",
    "/api/openapi.json",
)
"""Read-only API endpoints that stay open: the pages need them before asking for a token."""
GUARDED_PREFIXES = ("/api/", "/offer", "/whep/", "/whip/", "/metrics")
"""Paths whose requests (other than the public GETs and CORS preflights) need the token.
/metrics is among them: its labels carry session ids, which grant control of a session."""


def guarded(method: str, path: str) -> bool:
    """Whether ``method path`` needs the token (when one is set)."""
    if method == "OPTIONS" or not path.startswith(GUARDED_PREFIXES):
        return False
    return not (method in ("GET", "HEAD") and path in PUBLIC_GETS)


def needs_token(request: web.Request) -> bool:
    """Whether ``request`` is a control request (see the module docstring)."""
    return guarded(request.method, request.path)


def presented_token(request: web.Request) -> str | None:
    """The token the client sent, from the Authorization header or ``?token=``."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return request.query.get("token")


VIEWER_PREFIXES = ("/whep/",)
"""Paths a viewer link needs (WHEP; the OBS page itself is static and posts to /whep/):
the viewer token opens these, and only these."""


def viewer_path(path: str) -> bool:
    """Whether ``path`` is one that the viewer token opens."""
    return path.startswith(VIEWER_PREFIXES)


def token_middleware(token: str | None, viewer_token: str | None = None) -> Middleware:
    """Middleware refusing control requests without ``token`` (compared in constant time).

    WHEP requests take ``token`` or ``viewer_token``: a viewer link shared with an audience
    then carries a credential that can watch, not one that controls every session. When
    only ``viewer_token`` is set, the control endpoints stay open and WHEP needs it.
    """
    control = token.encode() if token else None
    viewer = viewer_token.encode() if viewer_token else None

    def matches(given: str | None, expected: bytes | None) -> bool:
        return (
            expected is not None
            and given is not None
            and hmac.compare_digest(given.encode(), expected)
        )

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not needs_token(request):
            return await handler(request)
        given = presented_token(request)
        if viewer_path(request.path):
            accepted = (
                (control is None and viewer is None)
                or matches(given, control)
                or matches(given, viewer)
            )
        else:
            accepted = control is None or matches(given, control)
        if not accepted:
            return json_error(
                401,
                "missing or wrong API token; send 'Authorization: Bearer <token>'",
                {"WWW-Authenticate": 'Bearer realm="talking-avatar"'},
            )
        return await handler(request)

    return check


def cors_middleware(origins: tuple[str, ...]) -> Middleware:
    """CORS for the listed origins only (``*`` allows any); preflights answered here."""
    allow_any = "*" in origins

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = origin is not None and (allow_any or origin in origins)
        if (
            request.method == "OPTIONS"
            and allowed
            and "Access-Control-Request-Method" in request.headers
        ):
            response: web.StreamResponse = web.Response(status=204)
            if request.path.startswith("/whep/"):  # WHEP clients learn the body type here
                response.headers["Accept-Post"] = "application/sdp"
        else:
            response = await handler(request)
        if allowed and origin is not None:
            response.headers["Access-Control-Allow-Origin"] = "*" if allow_any else origin
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PATCH, DELETE, OPTIONS"
            response.headers["Access-Control-Expose-Headers"] = (
                "Location, Link, X-Timing-TTS, X-Timing-Lipsync, X-Timing-Encode, X-Timing-Total"
            )
            response.headers["Vary"] = "Origin"
        return response

    return cors


STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
"""Methods that make the server do something: the ones a foreign page must not send."""


def origin_allowed(request: web.Request, origins: tuple[str, ...]) -> bool:
    """Whether ``request`` may change state as far as its ``Origin`` header goes.

    No Origin (curl, OBS, server-to-server clients) is allowed: browsers send one with
    every cross-site POST, so a missing one never means a foreign page. The server's own
    origin and those given with ``--cors-origin`` are allowed (``*`` allows any); ``null``
    (sandboxed frames, file: pages) and every other origin are not.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if "*" in origins or origin in origins:
        return True
    return origin == f"{request.scheme}://{request.host}"


def origin_middleware(origins: tuple[str, ...]) -> Middleware:
    """Refuse state-changing requests from foreign pages (403), token or no token.

    Without this, any page the operator opens could POST a "simple" request (text/plain or
    multipart, no CORS preflight) to 127.0.0.1 and fill the session slots or make the
    avatar speak: CORS only hides the answer from that page, not the side effect.
    """

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in STATE_CHANGING and not origin_allowed(request, origins):
            return json_error(
                403,
                f"requests from {request.headers.get('Origin')} are not "
                "allowed; start the server with --cors-origin ORIGIN to "
                "allow a page on another origin",
            )
        return await handler(request)

    return check
