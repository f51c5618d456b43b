"""JSON errors for every failure: a 4xx/5xx with {"error": ...}, never an HTML page or trace."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

JSON_LIMIT = web.RequestKey("max_json_bytes", int)
"""Request key holding the JSON body limit (set by rtc.http.limits.json_limit_middleware), so that
:func:`read_json_object` can hold a chunked body, which declares no length, to it too."""
RETRY_AFTER = "10"
"""Seconds a client told 503 (every slot taken) should wait before it tries again."""
READ_CHUNK = 64 * 1024
"""Bytes read from a JSON body at a time while it is counted against the limit."""


def error_text(e: BaseException) -> str:
    """An exception's message, or its type's name when it has none (aiortc and aiohttp
    raise some with an empty message, which would leave "invalid SDP offer: " and no why)."""
    return str(e).strip() or type(e).__name__


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON error response."""
    return web.json_response({"error": message}, status=status, headers=headers)


class ApiError(Exception):
    """Raised by handlers to answer with ``status`` and ``message``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into JSON; unexpected ones are logged with their trace and become 500."""
    try:
        return await handler(request)
    except ApiError as e:
        return json_error(e.status, e.message, e.headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        reason = e.text if e.text and not e.text.startswith(str(e.status)) else e.reason
        if e.status == 413:
            reason = "request body too large"
        return json_error(
            e.status,
            reason,
            {k: v for k, v in e.headers.items() if k.lower() in ("allow", "retry-after")},
        )
    except (json.JSONDecodeError, RecursionError):  # a JSON body parsed outside parse_json
        return json_error(400, "malformed JSON body")
    except HttpProcessingError as e:  # e.g. a multipart body with broken part headers
        log.info("malformed request body in %s %s: %s", request.method, request.path, e)
        status = e.code if 400 <= e.code < 500 else 400
        return json_error(status, f"malformed request body: {e.message or type(e).__name__}")
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_error(500, "internal error; the server log has the details")


async def read_json_object(request: web.Request) -> dict[str, object]:
    """The request's JSON body, which must be an object; ApiError(400) otherwise.

    The body is read under the JSON limit when one is set on the request: a body declaring
    its length was checked before the handler ran, but a chunked one is only known to be too
    large while it arrives (ApiError(413) then, without reading the rest).
    """
    if request.content_type != "application/json":
        # Also what keeps a foreign page's text/plain "simple" request (no CORS preflight)
        # from being read as JSON.
        raise ApiError(
            415,
            "send the body as Content-Type: application/json (got "
            f"{request.headers.get('Content-Type', 'none')[:100]})",
        )
    limit = request.get(JSON_LIMIT)
    # Reading the stream bypasses aiohttp's own cap (the upload limit): keep the smaller.
    raw = (
        await request.read()
        if limit is None
        else await _read_capped(request, min(limit, request.client_max_size))
    )
    try:
        text = raw.decode(request.charset or "utf-8")
    except (UnicodeDecodeError, LookupError):
        raise ApiError(400, "malformed JSON body: it is not UTF-8 text") from None
    try:
        body = parse_json(text)
    except MalformedJson as e:
        raise ApiError(400, f"malformed JSON body: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the JSON body must be an object")
    return body


class MalformedJson(ValueError):
    """Text that is not JSON this server takes; the message says why."""


def _no_constant(name: str) -> object:
    raise MalformedJson(f"{name} is not JSON")


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):  # 1e999 parses as inf
        raise MalformedJson(f"the number {literal[:20]} is too large")
    return value


def parse_json(text: str | bytes) -> object:
    """``json.loads`` that raises nothing but MalformedJson, for every client's JSON.

    json.loads raises more than JSONDecodeError for valid-looking input: ValueError for an
    integer beyond Python's digit limit, RecursionError for deep nesting. It also takes
    NaN and Infinity, which are not JSON and would poison any number they reach.
    """
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except MalformedJson:
        raise
    except json.JSONDecodeError as e:
        raise MalformedJson(f"{e.msg} (line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise MalformedJson("it is nested too deeply") from None
    except ValueError as e:  # e.g. "Exceeds the limit (4300 digits) for integer string"
        raise MalformedJson(str(e).split(";")[0]) from None


async def _read_capped(request: web.Request, limit: int) -> bytes:
    """At most ``limit`` bytes of body; ApiError(413) as soon as more arrive."""
    parts: list[bytes] = []
    size = 0
    while True:
        # request.content rather than request.read(): read() would buffer the whole body
        # (up to client_max_size, the upload limit) before anything could be checked.
        part = await request.content.read(READ_CHUNK)
        if not part:
            return b"".join(parts)
        size += len(part)
        if size > limit:
            raise ApiError(413, f"JSON body too large: the limit is {limit} bytes")
        parts.append(part)
