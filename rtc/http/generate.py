"""POST /api/generate: text or an uploaded audio file in, a lip-synced MP4 out."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from inference.audio_io import AudioDecodeError, SourceAudio
from inference.avatar.store import Avatar
from inference.engines.base import EngineUnavailable, LipSyncEngine
from inference.frames import PhonemeMark
from inference.isolated_decode import decode_untrusted_with_source
from inference.render import RenderSettings, RenderStats, render_to_mp4
from inference.threads import named_pool
from inference.tts import TtsError, VoiceOptions
from rtc.http.bodies import GenerateBody, parse_body
from rtc.http.errors import ApiError, read_json_object
from rtc.http.metrics import Metrics
from rtc.http.multipart import read_upload
from rtc.services import Services

log = logging.getLogger(__name__)

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
"""OSError numbers meaning the temporary folder has no room left for the render."""


@dataclass
class GenerateJob:
    """A validated /api/generate request."""

    engine: str | None
    avatar: str | None
    language: str
    text: str | None = None
    audio: bytes | None = None
    voice: VoiceOptions | None = None
    """The voice, speed and pitch the text asks for (None: the language's defaults)."""


class Generator:
    """Validates requests, renders off the event loop and answers with the MP4."""

    def __init__(self, services: Services, metrics: Metrics | None = None) -> None:
        self._services = services
        self._metrics = metrics or Metrics()
        http = services.config.http
        # Renders running at once (few cores) and allowed to wait; beyond that 503, so a
        # burst of requests cannot pile up unbounded work and memory.
        parallel = max(1, http.max_parallel_renders)
        self._slots = asyncio.Semaphore(parallel)
        self._pool = named_pool("render", parallel)
        self._max_waiting = max(0, http.max_waiting_renders)
        self._waiting = 0

    async def close(self, _: web.Application | None = None) -> None:
        """Wait for running renders and stop the render threads (app.on_cleanup)."""
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler; counts every request by input and outcome."""
        source = "audio" if request.content_type.startswith("multipart/") else "text"
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
            self._metrics.generate_requests.labels(source, str(status)).inc()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        job = await self._parse(request)
        # Validate names before queueing so mistakes answer at once.
        try:
            engine = self._services.engine(job.engine)
            avatar = self._services.avatars.get(job.avatar)
        except EngineUnavailable as e:
            raise ApiError(503, str(e)) from None
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        if self._slots.locked() and self._waiting >= self._max_waiting:
            raise ApiError(
                503,
                f"too many renders queued (limit {self._max_waiting} waiting); try again shortly",
                {"Retry-After": "5"},
            )
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        # The slot is given back when the render thread finishes, not when this request
        # does: a client that disconnects mid-render must not free a slot whose thread still
        # runs (else disconnecting clients could start any number of renders).
        loop = asyncio.get_running_loop()
        try:
            render = self._pool.submit(self._render, job, engine, avatar)
        except BaseException:
            self._slots.release()
            raise
        render.add_done_callback(lambda _: _call_soon(loop, self._slots.release))
        try:
            data, stats = await asyncio.wrap_future(render)
        except TtsError as e:
            # The TTS itself broke (not the text): the request may work later, others too.
            log.error("speech synthesis failed for /api/generate: %s", e)
            self._metrics.error("tts")
            raise ApiError(503, f"speech synthesis failed: {e}") from None
        except OSError as e:
            if e.errno not in DISK_FULL:
                raise
            log.error("no space left to render /api/generate in %s: %s", tempfile.gettempdir(), e)
            self._metrics.error("disk")
            raise ApiError(
                507,
                "the server has no disk space left for the render; free "
                f"space in {tempfile.gettempdir()}",
            ) from None
        self._metrics.generate_seconds.observe(time.perf_counter() - started)
        self._metrics.generate_video_seconds.inc(stats.duration)
        headers = stats.headers() | {"Content-Disposition": 'inline; filename="avatar.mp4"'}
        return web.Response(body=data, content_type="video/mp4", headers=headers)

    async def _parse(self, request: web.Request) -> GenerateJob:
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
        return GenerateJob(
            engine=body.engine, avatar=body.avatar, language=language, text=text, voice=voice
        )

    async def _parse_upload(self, request: web.Request) -> GenerateJob:
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
        return GenerateJob(
            engine=fields.get("engine") or None,
            avatar=fields.get("avatar") or None,
            language=language,
            audio=audio,
        )

    def _render(
        self, job: GenerateJob, engine: LipSyncEngine, avatar: Avatar
    ) -> tuple[bytes, RenderStats]:
        services = self._services
        t0 = time.perf_counter()
        phonemes: tuple[PhonemeMark, ...] = ()
        source: SourceAudio | None = None
        if job.text is not None:
            try:
                speech = services.tts.synthesize(job.text, job.language, job.voice)
            except ValueError as e:  # text the TTS cannot speak: the client's to change
                raise ApiError(400, str(e)) from None
            pcm, phonemes, source = speech.pcm, speech.phonemes, speech.source
        else:
            assert job.audio is not None
            try:  # the file keeps the upload's own rate and channels (up to 48 kHz stereo)
                pcm, source = decode_untrusted_with_source(
                    job.audio, services.config.http.max_upload_seconds
                )
            except AudioDecodeError as e:
                raise ApiError(400, str(e)) from None
        tts_time = time.perf_counter() - t0
        with tempfile.TemporaryDirectory(prefix="avatar-render-") as tmp:
            out = Path(tmp) / "out.mp4"
            stats = render_to_mp4(
                pcm,
                avatar,
                engine,
                out,
                phonemes=phonemes,
                settings=RenderSettings(
                    services.config.engines.silence_rms, services.config.avatars.feather
                ),
                source=source,
            )
            data = out.read_bytes()
        stats = RenderStats(stats.frames, stats.duration, stats.lipsync, stats.encode, tts_time)
        log.info(
            "generated %.2f s of video with %s in %.2f s", stats.duration, engine.name, stats.total
        )
        return data, stats


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    """Run ``callback`` on ``loop`` from another thread (nothing to do if it has closed)."""
    # RuntimeError: the loop closed while the render ran, and nobody waits for the slot.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback)
