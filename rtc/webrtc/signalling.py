"""Realtime HTTP endpoints: offers, session control, events, and the realtime pages.

    POST   /offer                          {sdp, type, engine?, avatar?, language?, echo_mic?,
                                            stream?}
    POST   /api/generate_stream            same, engine pinned to wav2lip-gan
    POST   /api/generate_stream_nogan      same, engine pinned to wav2lip-nogan
    GET    /api/sessions/{id}              state and counters
    DELETE /api/sessions/{id}              end the session
    POST   /api/sessions/{id}/say          {text, language?}
    POST   /api/sessions/{id}/interrupt
    GET    /api/sessions/{id}/events       Server-Sent Events
    GET    /realtime, /realtime2           the pages (GAN, NOGAN)

Every error is JSON (see rtc.http.errors); nothing here answers 500 for bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from inference.avatar.store import Avatar
from inference.engines.base import EngineUnavailable
from inference.mel import mel_basis
from rtc.http.bodies import MAX_SDP_BYTES, AvatarBody, OfferBody, SayBody, parse_body
from rtc.http.errors import RETRY_AFTER, ApiError, read_json_object
from rtc.http.pages import page
from rtc.live.batcher import BatcherPool
from rtc.live.events import sse_message
from rtc.live.options import PipelineOptions
from rtc.live.speech import QueueFull
from rtc.outputs.streams import Stream, StreamRegistry, new_stream_name
from rtc.services import Services
from rtc.webrtc.ice import use_loopback_ice
from rtc.webrtc.session import OfferError, Session

log = logging.getLogger(__name__)

PINNED = {"/api/generate_stream": "wav2lip-gan", "/api/generate_stream_nogan": "wav2lip-nogan"}
"""The original tool's stream endpoints, each bound to one Wav2Lip variant."""
FALLBACK_ENGINE = "viseme"
"""Offered by the pages when a pinned engine cannot run (it needs no weights)."""
SSE_KEEPALIVE = 15.0


class Realtime:
    """Live sessions of one application and the handlers that manage them."""

    def __init__(self, services: Services) -> None:
        self.services = services
        config = services.config
        self.http = config.http
        self.live = config.realtime
        self.outputs = config.outputs
        self.batchers = BatcherPool.for_config(config)
        self.sessions: dict[str, Session] = {}
        self.streams = StreamRegistry(self.outputs.max_viewers_per_stream)
        self._stream_of: dict[str, str] = {}  # session id -> stream name
        self._opening = 0  # offers being negotiated count against the limit too
        self.event_listeners: list[Callable[[dict[str, Any]], None]] = []
        """Given to every new session (see Session.event_listeners)."""
        mel_basis()  # built lazily otherwise: ~0.4 s added to the first utterance's latency

    # --- offers ------------------------------------------------------------------------

    async def offer(self, request: web.Request) -> web.StreamResponse:
        """POST /offer and the pinned stream endpoints: SDP offer in, answer out."""
        pinned = PINNED.get(request.path)
        body = parse_body(OfferBody, await read_json_object(request))
        if len(body.sdp) > MAX_SDP_BYTES:
            raise ApiError(413, f"'sdp' is larger than {MAX_SDP_BYTES} bytes")
        sdp, kind, echo = body.sdp, body.type, body.echo_mic
        name = body.engine
        if pinned is not None and name not in (None, pinned):
            raise ApiError(
                400, f"{request.path} always uses {pinned}; POST /offer to choose another engine"
            )
        name = pinned or name
        stream_name = body.stream
        if stream_name is not None:
            try:
                self.streams.check_name(stream_name)
            except ValueError as e:
                raise ApiError(
                    409 if stream_name in self.streams.streams else 400, str(e)
                ) from None
        try:
            engine = self.services.engine(name)
        except EngineUnavailable as e:
            return self._unavailable(name or self.services.default_engine, str(e))
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        try:
            avatar = self.services.avatars.get(body.avatar)
            language = self.services.language(body.language)
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        if len(self.sessions) + self._opening >= self.live.max_sessions:
            raise ApiError(
                503,
                f"all {self.live.max_sessions} realtime sessions are in use; try again later",
                {"Retry-After": RETRY_AFTER},
            )
        session = self._new_session(engine.name, avatar, language, echo)
        self._opening += 1
        try:
            answer = await session.accept(sdp, kind)
        except OfferError as e:
            await session.close("bad offer")
            raise ApiError(400, str(e)) from None
        except BaseException:
            await asyncio.shield(session.close("offer failed"))
            raise
        finally:
            self._opening -= 1
        self.sessions[session.id] = session
        # A default name of its own, not the session id: a viewer link is shared, and the
        # session id is the handle that controls the session.
        if stream_name is None or stream_name in self.streams.streams:  # taken meanwhile
            stream_name = new_stream_name()
        self._open_stream(session, stream_name)
        return web.json_response(
            {
                "sdp": answer.sdp,
                "type": answer.type,
                "session_id": session.id,
                "engine": engine.name,
                "avatar": avatar.name,
                "stream": stream_name,
            }
        )

    def _new_session(self, engine: str, avatar: Avatar, language: str, echo: bool) -> Session:
        options = PipelineOptions(
            echo_mic=echo,
            silence_rms=self.services.config.engines.silence_rms,
            max_utterances=self.live.max_queued_utterances,
            idle_motion=self.services.config.avatars.idle_motion,
        )
        session = Session(
            self.services,
            self.batchers.get(self.services.engine(engine)),
            engine=engine,
            avatar=avatar,
            language=language,
            live=self.live,
            options=options,
            on_closed=self._forget,
        )
        session.event_listeners.extend(self.event_listeners)
        return session

    def _open_stream(self, session: Session, name: str) -> Stream:
        first = session.pipeline.first_frame
        stream = self.streams.open(
            name, session.id, session.media, session.audio, (first.width, first.height)
        )
        self._stream_of[session.id] = name
        return stream

    def open_always_on(self, name: str) -> Stream:
        """A stream with no caller: a session of the default engine, avatar and language
        that speaks what ``/api/sessions/{id}/say`` sends and never times out (for
        ``serve --publish``: Janus and its viewers are the audience)."""
        self.streams.check_name(name)
        services = self.services
        session = self._new_session(
            services.default_engine,
            services.avatars.get(None),
            services.language(None),
            echo=False,
        )
        session.start_without_peer()
        self.sessions[session.id] = session
        log.info("session=%s always-on stream %s", session.id, name)
        return self._open_stream(session, name)

    def emitter(self, stream: Stream) -> Callable[[dict[str, Any]], None]:
        """Where events about ``stream`` (its recordings) go: its session's emit while the
        session lives, so its listeners (/metrics' error counts) hear them; afterwards
        straight to the listeners (a closed session's hub ignores late events)."""

        def emit(event: dict[str, Any]) -> None:
            session = self.sessions.get(stream.session_id)
            if session is not None:
                session.emit(event)
            else:
                for listener in self.event_listeners:
                    listener({**event, "session": stream.session_id})

        return emit

    def _unavailable(self, name: str, reason: str) -> web.Response:
        fallback = FALLBACK_ENGINE if FALLBACK_ENGINE in self.services.engines else None
        return web.json_response(
            {
                "error": f"engine {name} is unavailable: {reason}",
                "engine": name,
                "reason": reason,
                "fallback": fallback,
            },
            status=503,
        )

    def _forget(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        stream_name = self._stream_of.pop(session.id, None)
        if stream_name is not None:  # its viewers end with it
            self.streams.close(stream_name)

    # --- session control ---------------------------------------------------------------

    def _session(self, request: web.Request) -> Session:
        session = self.sessions.get(request.match_info["session_id"])
        if session is None:
            raise ApiError(404, "no such session (it may have ended or timed out)")
        return session

    async def state(self, request: web.Request) -> web.Response:
        """GET /api/sessions/{id}."""
        return web.json_response(self._session(request).describe())

    async def delete(self, request: web.Request) -> web.Response:
        """DELETE /api/sessions/{id}."""
        session = self._session(request)
        await session.close("deleted by the client")
        return web.json_response({"closed": session.id})

    async def say(self, request: web.Request) -> web.Response:
        """POST /api/sessions/{id}/say {text, language?}: queue an utterance (202)."""
        session = self._session(request)
        body = parse_body(SayBody, await read_json_object(request))
        try:
            utterance = session.say_body(body)
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        except QueueFull as e:
            raise ApiError(429, str(e), {"Retry-After": "2"}) from None
        return web.json_response(
            {"utterance": utterance.id, "sentences": len(utterance.sentences)}, status=202
        )

    async def interrupt(self, request: web.Request) -> web.Response:
        """POST /api/sessions/{id}/interrupt: stop speaking now."""
        return web.json_response({"interrupted": self._session(request).interrupt()})

    async def avatar(self, request: web.Request) -> web.Response:
        """POST /api/sessions/{id}/avatar {"avatar"}: switch the face, live."""
        session = self._session(request)
        body = parse_body(AvatarBody, await read_json_object(request))
        try:
            name = session.switch_avatar(body.avatar)
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        return web.json_response({"avatar": name})

    async def events(self, request: web.Request) -> web.StreamResponse:
        """GET /api/sessions/{id}/events: Server-Sent Events until the session ends."""
        session = self._session(request)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        replay = request.query.get("replay", "1") != "0"
        stream = session.events.subscribe(replay=replay, keepalive=SSE_KEEPALIVE)
        try:
            await response.write(b": connected\n\n")
            async with contextlib.aclosing(stream):
                async for event in stream:
                    await response.write(
                        b": keepalive\n\n" if event is None else sse_message(event)
                    )
        except (ConnectionResetError, asyncio.CancelledError):
            return response  # the client went away or the server is stopping
        return response

    async def shutdown(self, _: web.Application | None = None) -> None:
        """Close every session and batcher (app.on_shutdown)."""
        sessions = list(self.sessions.values())
        await asyncio.gather(
            *(s.close("server shutting down") for s in sessions), return_exceptions=True
        )
        await asyncio.to_thread(self.batchers.close)


REALTIME_KEY = web.AppKey("realtime", Realtime)


def register_realtime(app: web.Application, services: Services) -> Realtime:
    """Add the realtime routes to ``app``; close its sessions when the app shuts down."""
    if services.config.realtime.ice_loopback:
        use_loopback_ice()
    realtime = Realtime(services)
    app[REALTIME_KEY] = realtime
    router = app.router
    for path in ("/offer", *PINNED):
        router.add_post(path, realtime.offer)
    router.add_get("/api/sessions/{session_id}", realtime.state)
    router.add_delete("/api/sessions/{session_id}", realtime.delete)
    router.add_post("/api/sessions/{session_id}/say", realtime.say)
    router.add_post("/api/sessions/{session_id}/interrupt", realtime.interrupt)
    router.add_post("/api/sessions/{session_id}/avatar", realtime.avatar)
    router.add_get("/api/sessions/{session_id}/events", realtime.events)
    router.add_get("/realtime", page("realtime.html"))
    router.add_get("/realtime2", page("realtime.html"))
    app.on_shutdown.append(realtime.shutdown)
    return realtime
