"""Recording a live stream to fragmented MP4, encoded off the event loop.

The recorder listens to the stream's released frames (rtc.outputs.streams) and hands copies to a
writer thread through a bounded queue. Everything is placed by its media clock slot: video
slot ``s`` is frame ``s - s0`` of the file and audio slot ``k`` starts at sample
``(k - 2*s0) * 320``, so the file keeps exactly the session's audio/video pairing. Gaps (a
skipped slot, an item dropped because the writer fell behind) are filled with the previous
picture or with silence, so a gap never shifts what follows.

A full disk or any OSError stops the recording with an error event; the session goes on.
The event goes out like the session's own events, so the metrics' error hook counts it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import av
import numpy as np
from aiohttp import web

from inference.mp4 import Mp4Writer
from inference.threads import set_os_thread_name
from rtc.http.errors import ApiError
from rtc.http.generate import DISK_FULL
from rtc.live.clock import AUDIO_PER_VIDEO, AUDIO_SAMPLES
from rtc.outputs.streams import Stream
from rtc.webrtc.signalling import REALTIME_KEY, Realtime

log = logging.getLogger(__name__)

QUEUE_ITEMS = 150
"""Items (video frames + audio chunks, about 2 s) waiting for the writer at most."""
RECORDING_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}\.mp4")
"""Names the download endpoint accepts: no separators, so no path can leave the folder."""


class VideoWriter(Protocol):
    """What the recorder needs of Mp4Writer (tests inject failing ones)."""

    def write_i420(self, yuv: np.ndarray) -> None: ...
    def write_audio(self, pcm: np.ndarray) -> None: ...
    def close(self) -> None: ...


WriterFactory = Callable[[Path, int, int], VideoWriter]


def mp4_writer(path: Path, width: int, height: int) -> VideoWriter:
    """The default writer: fragmented MP4, so a crash loses at most the last fragment."""
    return Mp4Writer(path, width, height, fragmented=True)


@dataclass
class RecordingLimits:
    """When a recording stops by itself."""

    max_seconds: float = 3600.0
    max_bytes: int = 2 * 1024**3


class Recorder:
    """One recording of one stream: listeners on the loop, a writer thread behind them."""

    def __init__(
        self,
        stream: Stream,
        path: Path,
        limits: RecordingLimits,
        emit: Callable[[dict[str, Any]], None],
        writer_factory: WriterFactory = mp4_writer,
    ) -> None:
        self.stream = stream
        self.path = path
        self.limits = limits
        self._emit = emit
        self._factory = writer_factory
        self._queue: queue.Queue[tuple[str, int, np.ndarray] | None] = queue.Queue(QUEUE_ITEMS)
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"recorder-{path.stem}", daemon=True)
        self.dropped = 0
        self.frames = 0
        self.error: str | None = None
        self.stop_reason: str | None = None
        self.started = time.time()
        self._stopping = False
        self.done = asyncio.Event()

    @property
    def name(self) -> str:
        """The file name (what GET /api/recordings/{name} takes)."""
        return self.path.name

    def start(self) -> None:
        """Attach to the stream and start the writer thread."""
        self.stream.video_listeners.append(self._on_video)
        self.stream.audio_listeners.append(self._on_audio)
        self._thread.start()
        log.info("session=%s recording %s started", self.stream.session_id, self.name)

    def _put(self, item: tuple[str, int, np.ndarray]) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:  # the writer is behind: the gap is filled later, time kept
            self.dropped += 1

    def _on_video(self, slot: int, frame: av.VideoFrame) -> None:
        # A copy on the loop (~0.1 ms): the frame object is re-stamped and reused later.
        self._put(("video", slot, frame.to_ndarray(format="yuv420p")))

    def _on_audio(self, slot: int, samples: np.ndarray) -> None:
        self._put(("audio", slot, samples))

    def stop(self, reason: str = "stopped") -> None:
        """Detach and let the writer finish the file (idempotent; returns at once)."""
        if self._stopping:
            return
        self._stopping = True
        self.stop_reason = self.stop_reason or reason
        if self._on_video in self.stream.video_listeners:
            self.stream.video_listeners.remove(self._on_video)
        if self._on_audio in self.stream.audio_listeners:
            self.stream.audio_listeners.remove(self._on_audio)
        # When the queue is full the writer notices _stopping once it has drained it.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    async def wait(self) -> None:
        """Until the file is complete."""
        await self.done.wait()

    def describe(self) -> dict[str, Any]:
        """State for the API."""
        return {
            "recording": self.name,
            "stream": self.stream.name,
            "frames": self.frames,
            "seconds": round(self.frames / 25, 2),
            "dropped": self.dropped,
            "active": not self.done.is_set(),
            "stop_reason": self.stop_reason,
            "error": self.error,
        }

    # --- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        set_os_thread_name()
        event: dict[str, Any]
        try:
            self._write_all()
            event = {
                "type": "recording_stopped",
                "recording": self.name,
                "reason": self.stop_reason,
                "frames": self.frames,
            }
        except OSError as e:  # disk full, folder removed ...: stop, keep the session
            self.error = f"{type(e).__name__}: {e}"
            self.stop_reason = "error"
            log.error(
                "session=%s recording %s failed: %s", self.stream.session_id, self.name, self.error
            )
            cause = "disk" if e.errno in DISK_FULL else "io"
            event = {
                "type": "recording_error",
                "recording": self.name,
                "message": self.error,
                "cause": cause,
            }
        except Exception as e:  # an encoder failure must not take the server down either
            self.error = f"{type(e).__name__}: {e}"
            self.stop_reason = "error"
            log.exception("session=%s recording %s failed", self.stream.session_id, self.name)
            event = {
                "type": "recording_error",
                "recording": self.name,
                "message": self.error,
                "cause": "encoder",
            }
        self._loop.call_soon_threadsafe(self._finished, event)

    def _finished(self, event: dict[str, Any]) -> None:
        self.stop(self.stop_reason or "stopped")  # detach after a failure in the thread
        self.done.set()
        self._emit(event)

    def _write_all(self) -> None:
        writer: VideoWriter | None = None
        s0: int | None = None  # video slot of the file's first frame
        last_yuv: np.ndarray | None = None
        audio_next = 0  # next audio slot (relative to 2*s0) the file expects
        pending_audio: list[tuple[int, np.ndarray]] = []
        max_frames = int(self.limits.max_seconds * 25)
        try:
            while True:
                item = self._queue.get()
                if item is None or (self._stopping and self._queue.empty()):
                    return
                kind, slot, data = item
                if kind == "audio":
                    pending_audio.append((slot, data))
                    if s0 is None:
                        continue
                else:
                    # The released frames are I420 already, and so is the file: no round
                    # trip through BGR (two conversions per frame, and their rounding).
                    if writer is None:
                        s0 = slot
                        width, height = data.shape[1], data.shape[0] * 2 // 3
                        writer = self._factory(self.path, width, height)
                    assert s0 is not None
                    target = slot - s0
                    if target < self.frames:
                        continue  # out of order or duplicate: its slot is written
                    while self.frames < target and last_yuv is not None:  # gap: repeat
                        writer.write_i420(last_yuv)
                        self.frames += 1
                    writer.write_i420(data)
                    self.frames += 1
                    last_yuv = data
                assert writer is not None and s0 is not None
                audio_next = self._write_audio(writer, pending_audio, s0, audio_next)
                pending_audio.clear()
                if self.frames >= max_frames:
                    self.stop_reason = "max_seconds"
                    return
                # The container creates the file with its first packet, not at open.
                if self.path.exists() and self.path.stat().st_size >= self.limits.max_bytes:
                    self.stop_reason = "max_bytes"
                    return
        finally:
            if writer is not None:
                writer.close()

    def _write_audio(
        self, writer: VideoWriter, chunks: list[tuple[int, np.ndarray]], s0: int, audio_next: int
    ) -> int:
        for slot, samples in sorted(chunks, key=lambda c: c[0]):
            index = slot - s0 * AUDIO_PER_VIDEO
            if index < audio_next:
                continue  # before the first frame, or already written
            if index > audio_next:  # a gap: silence keeps what follows in place
                writer.write_audio(np.zeros((index - audio_next) * AUDIO_SAMPLES, np.float32))
            writer.write_audio(samples.astype(np.float32) / 32768.0)
            audio_next = index + 1
        return audio_next


def recording_path(folder: Path, name: str) -> Path:
    """``folder/name`` for a valid recording name; ValueError for anything else."""
    if not RECORDING_NAME.fullmatch(name):
        raise ValueError("recording names are letters, digits, '-', '_' and '.', ending .mp4")
    root = folder.resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise ValueError("recording names cannot contain paths")
    return path


def new_recording_name(stream: str) -> str:
    """``{stream}-{UTC time}.mp4`` (stream names are URL-safe already)."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stream}-{stamp}.{int(now * 1000) % 1000:03d}Z.mp4"


class Recordings:
    """The recording endpoints (see :func:`register_recordings`)."""

    def __init__(self, realtime: Realtime) -> None:
        self.realtime = realtime
        http = realtime.http
        self.folder = Path(http.recordings_dir)
        self.limits = RecordingLimits(
            max_seconds=http.max_recording_seconds, max_bytes=http.max_recording_bytes
        )
        self.active: dict[str, Recorder] = {}  # by stream name
        self.writer_factory: WriterFactory = mp4_writer
        """Replaced by tests to simulate a failing disk."""

    def _stream(self, request: web.Request) -> Stream:
        name = request.match_info["stream"]
        stream = self.realtime.streams.get(name)
        if stream is None:
            raise ApiError(404, f"no live stream called {name!r}")
        return stream

    async def start(self, request: web.Request) -> web.Response:
        """POST /api/streams/{stream}/recording/start -> 201 {recording}."""
        stream = self._stream(request)
        current = self.active.get(stream.name)
        if current is not None and not current.done.is_set():
            raise ApiError(
                409,
                f"stream {stream.name} is already being recorded to {current.name}; stop it first",
            )
        session = self.realtime.sessions.get(stream.session_id)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ApiError(507, f"cannot create the recordings folder {self.folder}: {e}") from None

        def emit(event: dict[str, Any]) -> None:
            # Through the session's emit, not straight to its event hub: its listeners are
            # how /metrics counts errors (a closed session's hub ignores late events, but
            # its listeners still hear them).
            if session is not None:
                session.emit(event)
            else:
                for listener in self.realtime.event_listeners:
                    listener({**event, "session": stream.session_id})

        recorder = Recorder(
            stream,
            self.folder / new_recording_name(stream.name),
            self.limits,
            emit,
            self.writer_factory,
        )
        self.active[stream.name] = recorder
        stream.on_end.append(lambda _: recorder.stop("the session ended"))
        recorder.start()
        emit({"type": "recording_started", "recording": recorder.name})
        return web.json_response(recorder.describe(), status=201)

    async def stop(self, request: web.Request) -> web.Response:
        """POST /api/streams/{stream}/recording/stop -> 200 once the file is complete."""
        stream = self._stream(request)
        recorder = self.active.get(stream.name)
        if recorder is None:
            raise ApiError(409, f"stream {stream.name} is not being recorded")
        recorder.stop("stopped by the client")
        await recorder.wait()
        self.active.pop(stream.name, None)
        return web.json_response(recorder.describe())

    async def status(self, request: web.Request) -> web.Response:
        """GET /api/streams/{stream}/recording: the current (or last) recording."""
        stream = self._stream(request)
        recorder = self.active.get(stream.name)
        if recorder is None:
            raise ApiError(404, f"stream {stream.name} has no recording")
        return web.json_response(recorder.describe())

    async def list(self, request: web.Request) -> web.Response:
        """GET /api/recordings: finished and running recordings, newest first."""
        recording = {r.name for r in self.active.values() if not r.done.is_set()}
        files = (
            sorted(self.folder.glob("*.mp4"), key=lambda p: p.stat().st_mtime, reverse=True)
            if self.folder.is_dir()
            else []
        )
        return web.json_response(
            {
                "recordings": [
                    {
                        "name": p.name,
                        "bytes": p.stat().st_size,
                        "recording": p.name in recording,
                        "url": f"/api/recordings/{p.name}",
                    }
                    for p in files
                ]
            }
        )

    async def download(self, request: web.Request) -> web.StreamResponse:
        """GET /api/recordings/{name}: the MP4 file."""
        try:
            path = recording_path(self.folder, request.match_info["name"])
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        if not path.is_file():
            raise ApiError(404, "no such recording")
        return web.FileResponse(
            path,
            headers={
                "Content-Type": "video/mp4",
                "Content-Disposition": f'attachment; filename="{path.name}"',
            },
        )

    async def shutdown(self, _: web.Application | None = None) -> None:
        """Finish every file (app.on_shutdown)."""
        for recorder in self.active.values():
            recorder.stop("server shutting down")
        await asyncio.gather(*(r.wait() for r in self.active.values()), return_exceptions=True)


def register_recordings(app: web.Application) -> Recordings:
    """Add the recording routes (after rtc.webrtc.signalling.register_realtime)."""
    recordings = Recordings(app[REALTIME_KEY])
    app[RECORDINGS_KEY] = recordings
    router = app.router
    router.add_post("/api/streams/{stream}/recording/start", recordings.start)
    router.add_post("/api/streams/{stream}/recording/stop", recordings.stop)
    router.add_get("/api/streams/{stream}/recording", recordings.status)
    router.add_get("/api/recordings", recordings.list)
    router.add_get("/api/recordings/{name}", recordings.download)
    app.on_shutdown.insert(0, recordings.shutdown)  # before the sessions close
    return recordings


RECORDINGS_KEY = web.AppKey("recordings", Recordings)
