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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import av
import numpy as np

from inference.mp4 import Mp4Writer
from inference.threads import set_os_thread_name
from rtc.http.generate import DISK_FULL
from rtc.live.clock import AUDIO_PER_VIDEO, AUDIO_SAMPLES
from rtc.live.event_kinds import LiveEvent, RecordingError, RecordingStopped
from rtc.outputs.streams import Stream

log = logging.getLogger(__name__)

QUEUE_ITEMS = 150
"""Items (video frames + audio chunks, about 2 s) waiting for the writer at most."""


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
        event: LiveEvent
        try:
            self._write_all()
            event = RecordingStopped(self.name, reason=self.stop_reason, frames=self.frames)
        except OSError as e:  # disk full, folder removed ...: stop, keep the session
            self.error = f"{type(e).__name__}: {e}"
            self.stop_reason = "error"
            log.error(
                "session=%s recording %s failed: %s", self.stream.session_id, self.name, self.error
            )
            cause = "disk" if e.errno in DISK_FULL else "io"
            event = RecordingError(self.name, message=self.error, cause=cause)
        except Exception as e:  # an encoder failure must not take the server down either
            self.error = f"{type(e).__name__}: {e}"
            self.stop_reason = "error"
            log.exception("session=%s recording %s failed", self.stream.session_id, self.name)
            event = RecordingError(self.name, message=self.error, cause="encoder")
        self._loop.call_soon_threadsafe(self._finished, event)

    def _finished(self, event: LiveEvent) -> None:
        self.stop(self.stop_reason or "stopped")  # detach after a failure in the thread
        self.done.set()
        self._emit(event.to_wire())

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
