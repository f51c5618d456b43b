"""POST /api/generate: text or an uploaded audio file in, a lip-synced MP4 out.

:class:`Generator` also serves the render jobs (rtc/http/jobs.py): both take the same
bodies (:meth:`Generator.admit`), share the render slots and threads (:meth:`Generator.run`)
and render the same way (:meth:`Generator.render_file`)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

from aiohttp import web

from inference.audio_io import AudioDecodeError, SourceAudio
from inference.avatar.store import Avatar
from inference.engines.base import EngineUnavailable, LipSyncEngine
from inference.frames import PhonemeMark
from inference.isolated_decode import decode_untrusted_with_source
from inference.mel import frame_count
from inference.render import RenderSettings, RenderStats, render_to_mp4
from inference.threads import named_pool
from inference.tts import TtsError, VoiceOptions
from rtc.http.bodies import GenerateBody, parse_body
from rtc.http.errors import ApiError, read_json_object
from rtc.http.metrics import Metrics
from rtc.http.multipart import read_upload
from rtc.http.slots import RenderSlots, Turn
from rtc.services import Services

log = logging.getLogger(__name__)

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
"""OSError numbers meaning the temporary folder has no room left for the render."""
INLINE_MP4 = {"Content-Disposition": 'inline; filename="avatar.mp4"'}
"""How a rendered MP4 is handed out: shown in the browser, saved as avatar.mp4."""

T = TypeVar("T")
Progress = Callable[[int, int], None]
"""``progress(done, total)`` frames, called in the render thread; it may raise to stop."""


@dataclass
class RenderRequest:
    """A validated /api/generate or /api/jobs body."""

    engine: str | None
    avatar: str | None
    language: str
    text: str | None = None
    audio: bytes | None = None
    voice: VoiceOptions | None = None
    """The voice, speed and pitch the text asks for (None: the language's defaults)."""


@dataclass
class Render:
    """An admitted render: the request, the engine and avatar it named, its slot turn."""

    request: RenderRequest
    engine: LipSyncEngine
    avatar: Avatar
    turn: Turn


def body_source(request: web.Request) -> str:
    """The metrics' label of a render request's input: text (JSON) or audio (an upload)."""
    return "audio" if request.content_type.startswith("multipart/") else "text"


class Generator:
    """Validates requests, renders off the event loop and answers with the MP4."""

    def __init__(self, services: Services, metrics: Metrics | None = None) -> None:
        self._services = services
        self._metrics = metrics or Metrics()
        http = services.config.http
        self.slots = RenderSlots(http.max_parallel_renders, http.max_waiting_renders)
        self._pool = named_pool("render", self.slots.parallel)

    async def close(self, _: web.Application | None = None) -> None:
        """Wait for running renders and stop the render threads (app.on_cleanup)."""
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler; counts every request by input and outcome."""
        status = 500
        try:
            response = await self._handle(request)
            status = response.status
            return response
        except ApiError as e:
            status = e.status
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away (nginx's code for it)
            raise
        finally:
            self._metrics.generate_requests.labels(body_source(request), str(status)).inc()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        render = await self.admit(request)
        data, stats = await self.run(render, partial(self._render_bytes, render))
        self._metrics.generate_seconds.observe(time.perf_counter() - started)
        self._metrics.generate_video_seconds.inc(stats.duration)
        headers = stats.headers() | INLINE_MP4
        return web.Response(body=data, content_type="video/mp4", headers=headers)

    async def admit(self, request: web.Request) -> Render:
        """The request's body validated and given a place in the render queue; ApiError
        (4xx, or 503 for an engine that cannot run here or a full queue) otherwise."""
        body = await self._parse(request)
        # Validate names before queueing so mistakes answer at once.
        try:
            engine = self._services.engine(body.engine)
            avatar = self._services.avatars.get(body.avatar)
        except EngineUnavailable as e:
            raise ApiError(503, str(e)) from None
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        return Render(body, engine, avatar, self.slots.admit())

    async def run(
        self, render: Render, work: Callable[[], T], on_start: Callable[[], None] | None = None
    ) -> T:
        """Wait for a slot, then ``work()`` in a render thread (``on_start`` as it starts);
        a TTS failure becomes ApiError 503 and a full disk 507."""
        turn = render.turn
        # The slot is given back when the render thread finishes, not when the caller stops
        # waiting: a client that disconnects mid-render must not free a slot whose thread
        # still runs (else disconnecting clients could start any number of renders).
        loop = asyncio.get_running_loop()
        try:
            await turn.wait()
            if on_start is not None:
                on_start()
            future = self._pool.submit(work)
        except BaseException:
            turn.end()
            raise
        future.add_done_callback(lambda _: call_soon(loop, turn.end))
        try:
            return await asyncio.wrap_future(future)
        except TtsError as e:
            # The TTS itself broke (not the text): the request may work later, others too.
            log.error("speech synthesis failed for a render: %s", e)
            self._metrics.error("tts")
            raise ApiError(503, f"speech synthesis failed: {e}") from None
        except OSError as e:
            if e.errno not in DISK_FULL:
                raise
            log.error("no space left to render in %s: %s", tempfile.gettempdir(), e)
            self._metrics.error("disk")
            raise ApiError(
                507,
                "the server has no disk space left for the render; free "
                f"space in {tempfile.gettempdir()}",
            ) from None

    async def _parse(self, request: web.Request) -> RenderRequest:
        services = self._services
        if request.content_type == "multipart/form-data":
            return await self._parse_upload(request)
        if request.content_type != "application/json":
            raise ApiError(
                415,
                "send application/json {text, language, engine?, avatar?} "
                "or multipart/form-data with an 'audio' file "
                f"(got {request.headers.get('Content-Type', 'none')[:100]})",
            )
        body = parse_body(GenerateBody, await read_json_object(request))
        try:
            text = services.check_text(body.text)
            language = services.language(body.language)
            voice = services.voice_options(language, body)
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        return RenderRequest(
            engine=body.engine, avatar=body.avatar, language=language, text=text, voice=voice
        )

    async def _parse_upload(self, request: web.Request) -> RenderRequest:
        """A multipart upload (rtc/http/multipart.py counts every byte and part)."""
        services = self._services
        upload = await read_upload(
            request, "audio", services.config.http.max_upload_bytes, "engine, avatar, language"
        )
        audio, fields = upload.file, upload.fields
        if audio is None:
            raise ApiError(400, "multipart upload needs an 'audio' file field")
        if not audio:
            raise ApiError(400, "the uploaded audio file is empty")
        language = fields.get("language") or services.config.tts.default_language
        return RenderRequest(
            engine=fields.get("engine") or None,
            avatar=fields.get("avatar") or None,
            language=language,
            audio=audio,
        )

    def _render_bytes(self, render: Render) -> tuple[bytes, RenderStats]:
        with tempfile.TemporaryDirectory(prefix="avatar-render-") as tmp:
            out = Path(tmp) / "out.mp4"
            stats = self.render_file(render, out)
            return out.read_bytes(), stats

    def render_file(
        self, render: Render, out: Path, progress: Progress | None = None
    ) -> RenderStats:
        """Speak or decode the request's audio and lip-sync it into ``out`` (blocking: run
        it in a render thread). ``progress(0, total)`` comes once the frame count is known,
        then ``progress(done, total)`` after every chunk; an exception it raises stops the
        render. Text the TTS cannot speak and audio that does not decode: ApiError(400)."""
        services = self._services
        body = render.request
        t0 = time.perf_counter()
        phonemes: tuple[PhonemeMark, ...] = ()
        source: SourceAudio | None = None
        if body.text is not None:
            try:
                speech = services.tts.synthesize(body.text, body.language, body.voice)
            except ValueError as e:  # text the TTS cannot speak: the client's to change
                raise ApiError(400, str(e)) from None
            pcm, phonemes, source = speech.pcm, speech.phonemes, speech.source
        else:
            assert body.audio is not None
            try:  # the file keeps the upload's own rate and channels (up to 48 kHz stereo)
                pcm, source = decode_untrusted_with_source(
                    body.audio, services.config.http.max_upload_seconds
                )
            except AudioDecodeError as e:
                raise ApiError(400, str(e)) from None
        tts_time = time.perf_counter() - t0
        if progress is not None:
            progress(0, frame_count(pcm.size))
        stats = render_to_mp4(
            pcm,
            render.avatar,
            render.engine,
            out,
            phonemes=phonemes,
            settings=RenderSettings(
                services.config.engines.silence_rms,
                services.config.avatars.feather,
                0 if services.config.avatars.idle_motion else None,
            ),
            progress=progress,
            source=source,
        )
        stats = RenderStats(stats.frames, stats.duration, stats.lipsync, stats.encode, tts_time)
        log.info(
            "generated %.2f s of video with %s in %.2f s",
            stats.duration,
            render.engine.name,
            stats.total,
        )
        return stats


def call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    """Run ``callback`` on ``loop`` from another thread (nothing to do if it has closed)."""
    # RuntimeError: the loop closed while the render ran, and nobody waits for the slot.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback)
