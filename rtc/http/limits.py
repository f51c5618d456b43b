"""Request-size limits enforced before a handler reads the body.

aiohttp's ``client_max_size`` caps every body at the upload limit (20 MB by default), which
would let a client make the server parse megabytes of JSON for a 2000-character text. JSON
bodies are therefore held to ``max_json_bytes`` by their declared Content-Length, refused
with 413 before a byte of the body is read. A chunked JSON body declares no length: the limit
is left on the request for :func:`rtc.http.errors.read_json_object`, which answers 413 as soon as
more than ``max_json_bytes`` have arrived.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware

from rtc.http.errors import JSON_LIMIT, Handler, json_error


def json_limit_middleware(max_json_bytes: int) -> Middleware:
    """Refuse JSON bodies whose Content-Length exceeds ``max_json_bytes`` (413); leave the
    limit on the request for the bodies that declare no length."""

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        length = request.content_length
        if (
            length is not None
            and length > max_json_bytes
            and request.content_type == "application/json"
        ):
            return json_error(
                413, f"JSON body too large: {length} bytes; the limit is {max_json_bytes} bytes"
            )
        request[JSON_LIMIT] = max_json_bytes
        return await handler(request)

    return limit
