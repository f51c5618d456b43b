"""aiohttp's access log with credentials taken out of every line.

The pages' EventSource and the OBS/viewer URLs carry ``?token=`` (they cannot set headers),
and a custom log format may print any header: written as sent, a log file would hand out
control of the server to whoever can read it.
"""

from __future__ import annotations

from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse
from multidict import CIMultiDict
from yarl import URL

REDACTED = "[redacted]"
SECRET_QUERY_KEYS = frozenset({"token", "viewer_token", "access_token"})
"""Query parameters that carry a credential."""
SECRET_HEADERS = ("Authorization", "Proxy-Authorization", "Cookie")
"""Request headers never written as they came."""


def redact_url(url: URL) -> URL:
    """``url`` with the value of every credential query parameter replaced."""
    if not any(key.lower() in SECRET_QUERY_KEYS for key in url.query):
        return url
    query = [
        (key, REDACTED if key.lower() in SECRET_QUERY_KEYS else value)
        for key, value in url.query.items()
    ]
    return url.with_query(query)


def redact_referer(value: str) -> str:
    """A Referer header with its credentials replaced (the pages' own URLs hold ?token=)."""
    try:
        return str(redact_url(URL(value)))
    except ValueError:
        return REDACTED


class RedactingAccessLogger(AccessLogger):
    """AccessLogger that formats a copy of the request without its credentials."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        headers = CIMultiDict(request.headers)
        for name in SECRET_HEADERS:
            if name in headers:
                headers[name] = REDACTED
        if "Referer" in headers:
            headers["Referer"] = redact_referer(headers["Referer"])
        try:
            safe = request.clone(rel_url=redact_url(request.rel_url), headers=headers)
        except (ValueError, RuntimeError):  # a request aiohttp cannot copy: log no URL
            safe = request.clone(rel_url=URL("/[unloggable]"), headers=headers)
        super().log(safe, response, time)
