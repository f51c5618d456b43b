"""The recording endpoints: start and stop a stream's recording, list and download the
files (the recorder itself is rtc/outputs/recorder.py)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from config import OutputConfig
from rtc.http.errors import ApiError
from rtc.live.event_kinds import RecordingStarted
from rtc.outputs.recorder import Recorder, RecordingLimits, WriterFactory, mp4_writer
from rtc.outputs.streams import Stream, StreamRegistry
from rtc.webrtc.signalling import REALTIME_KEY

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]

RECORDING_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}\.mp4")
"""Names the download endpoint accepts: no separators, so no path can leave the folder."""


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

    def __init__(
        self, streams: StreamRegistry, outputs: OutputConfig, emitter: Callable[[Stream], Emit]
    ) -> None:
        self.streams = streams
        self._emitter = emitter
        """Where a stream's recording events go (its session's events, and so /metrics)."""
        self.folder = Path(outputs.recordings_dir)
        self.limits = RecordingLimits(
            max_seconds=outputs.max_recording_seconds, max_bytes=outputs.max_recording_bytes
        )
        self.active: dict[str, Recorder] = {}  # by stream name
        self.writer_factory: WriterFactory = mp4_writer
        """Replaced by tests to simulate a failing disk."""

    def _stream(self, request: web.Request) -> Stream:
        name = request.match_info["stream"]
        stream = self.streams.get(name)
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
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ApiError(507, f"cannot create the recordings folder {self.folder}: {e}") from None
        emit = self._emitter(stream)
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
        emit(RecordingStarted(recorder.name).to_wire())
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
    realtime = app[REALTIME_KEY]
    recordings = Recordings(realtime.streams, realtime.outputs, realtime.emitter)
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
