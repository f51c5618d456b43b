"""The publication endpoints (the publisher itself is rtc/outputs/publish.py).

    POST   /api/streams/{stream}/publish   201 + Location: /api/publications/{id}
    GET    /api/publications
    GET    /api/publications/{id}
    DELETE /api/publications/{id}

Control endpoints: the bearer token guards them like the session endpoints (rtc/http/auth.py).
A publication ends with its stream (the session closing), by DELETE, or at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from config import OutputConfig, RealtimeConfig
from rtc.http.bodies import PublishBody, describe_errors, parse_body
from rtc.http.errors import ApiError, read_json_object
from rtc.outputs.publish import Publication, PublishRefused
from rtc.outputs.streams import Stream, StreamRegistry
from rtc.webrtc.signalling import REALTIME_KEY

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]

MAX_PER_STREAM = 4
"""Publications one stream may have at once (each is an outgoing peer and a Janus session)."""


class Publications:
    """Every publication of every stream, by id."""

    def __init__(
        self, streams: StreamRegistry, live: RealtimeConfig, emitter: Callable[[Stream], Emit]
    ) -> None:
        self.streams = streams
        self.live = live
        self._emitter = emitter
        self.active: dict[str, Publication] = {}

    async def publish(
        self, stream_name: str, body: PublishBody, persistent: bool = False
    ) -> Publication:
        """Publish ``stream_name`` as ``body`` says; ApiError for what the client must fix
        (with ``persistent``, a failed first attempt is retried instead)."""
        stream = self.streams.get(stream_name)
        if stream is None:
            raise ApiError(404, f"no live stream called {stream_name!r}")
        mine = [p for p in self.active.values() if p.stream is stream]
        if len(mine) >= MAX_PER_STREAM:
            raise ApiError(409, f"stream {stream.name} has {MAX_PER_STREAM} publications already")
        publication = Publication(stream, body, self.live.ice_servers, self._emitter(stream))
        try:
            await publication.start(persistent)
        except PublishRefused as e:
            raise ApiError(e.status, str(e)) from None
        self.active[publication.id] = publication
        stream.publications[publication.id] = publication
        stream.on_end.append(lambda _: self._end_soon(publication, "the stream ended"))
        return publication

    def _end_soon(self, publication: Publication, reason: str) -> None:
        self._forget(publication)
        task = asyncio.get_running_loop().create_task(publication.stop(reason))
        task.add_done_callback(lambda t: t.exception())  # logged by stop itself

    def _forget(self, publication: Publication) -> None:
        self.active.pop(publication.id, None)
        publication.stream.publications.pop(publication.id, None)

    async def post(self, request: web.Request) -> web.Response:
        """POST /api/streams/{stream}/publish -> 201."""
        body = parse_body(PublishBody, await read_json_object(request))
        publication = await self.publish(request.match_info["stream"], body)
        return web.json_response(
            publication.describe(),
            status=201,
            headers={"Location": f"/api/publications/{publication.id}"},
        )

    def _publication(self, request: web.Request) -> Publication:
        publication = self.active.get(request.match_info["id"])
        if publication is None:
            raise ApiError(404, "no such publication (it may have ended with its stream)")
        return publication

    async def list(self, request: web.Request) -> web.Response:
        """GET /api/publications."""
        return web.json_response({"publications": [p.describe() for p in self.active.values()]})

    async def get(self, request: web.Request) -> web.Response:
        """GET /api/publications/{id}."""
        return web.json_response(self._publication(request).describe())

    async def delete(self, request: web.Request) -> web.Response:
        """DELETE /api/publications/{id}: leave the room, free everything."""
        publication = self._publication(request)
        self._forget(publication)
        await publication.stop("deleted by the client")
        return web.json_response(publication.describe())

    async def shutdown(self, _: web.Application | None = None) -> None:
        """Leave every room (app.on_shutdown, before the sessions close)."""
        publications = list(self.active.values())
        self.active.clear()
        await asyncio.gather(
            *(p.stop("server shutting down") for p in publications), return_exceptions=True
        )


def register_publications(app: web.Application, outputs: OutputConfig) -> Publications:
    """Add the publication routes (after rtc.webrtc.signalling.register_realtime), and with
    ``outputs.publish`` the always-on stream and its publications at start-up."""
    realtime = app[REALTIME_KEY]
    publications = Publications(realtime.streams, realtime.live, realtime.emitter)
    targets = [parse_target(text) for text in outputs.publish]  # bad flags fail at once

    async def always_on(_: web.Application) -> None:
        stream = realtime.open_always_on(outputs.always_on_stream)
        for target in targets:
            publication = await publications.publish(stream.name, target, persistent=True)
            log.info("always-on stream %s: publication %s", stream.name, publication.id)

    if targets:
        app.on_startup.append(always_on)
    app[PUBLICATIONS_KEY] = publications
    router = app.router
    router.add_post("/api/streams/{stream}/publish", publications.post)
    router.add_get("/api/publications", publications.list)
    router.add_get("/api/publications/{id}", publications.get)
    router.add_delete("/api/publications/{id}", publications.delete)
    app.on_shutdown.insert(0, publications.shutdown)
    return publications


PUBLICATIONS_KEY = web.AppKey("publications", Publications)


def parse_target(text: str) -> PublishBody:
    """``janus:URL#room=N&feed=F&display=D&pin=P&secret=S&admin_key=K&create_room=1`` (the
    ``serve --publish`` form) as a body; ValueError saying what is wrong."""
    kind, _, rest = text.partition(":")
    if kind != "janus" or not rest:
        raise ValueError(f"--publish {text!r}: expected janus:http://HOST:8088/janus#room=N")
    url, _, fragment = rest.partition("#")
    fields: dict[str, Any] = {"kind": "janus", "url": url}
    for pair in filter(None, fragment.split("&")):
        key, _, value = pair.partition("=")
        if key in ("room", "feed"):
            fields[key] = int(value) if value.isdigit() else value
        elif key == "create_room":
            fields["create_room"] = value.lower() in ("1", "true", "yes")
        elif key in ("display", "pin", "secret", "admin_key"):
            fields[key] = value
        else:
            raise ValueError(f"--publish {text!r}: unknown setting {key!r}")
    try:
        return PublishBody.model_validate(fields)
    except ValidationError as e:
        raise ValueError(f"--publish {text!r}: {describe_errors(e)}") from None
