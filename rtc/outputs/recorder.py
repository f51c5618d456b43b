"""Recording a live stream to fragmented MP4, written off the event loop.

The recorder is one more receiver of the stream's shared H.264 encoder (rtc/webrtc/fanout.py):
the file's video is the very packets the viewers get, muxed without a second encode. Its
audio is the released samples, encoded to AAC here (every player takes AAC in MP4; it costs
about 1 % of a core). Items reach a writer thread through a bounded queue and are placed by
their media clock slot: video slot ``s`` is frame ``s - s0`` of the file and audio slot ``k``
starts at sample ``(k - 2*s0) * 320``, so the file keeps exactly the session's audio/video
pairing. A video gap (a skipped slot) holds the previous picture; an audio gap is silence,
so a gap never shifts what follows. If the writer falls behind, video is dropped up to the
next keyframe (never a partial GOP, which would smear until then).

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

import numpy as np

from inference.mp4 import PacketMp4Writer
from inference.threads import set_os_thread_name
from rtc.http.generate import DISK_FULL
from rtc.live.clock import AUDIO_PER_VIDEO, AUDIO_SAMPLES
from rtc.live.event_kinds import LiveEvent, RecordingError, RecordingStopped
from rtc.outputs.streams import Stream
from rtc.webrtc.encoding import H264
from rtc.webrtc.fanout import Receiver

log = logging.getLogger(__name__)

QUEUE_ITEMS = 150
"""Items (video frames + audio chunks, about 2 s) waiting for the writer at most."""


class VideoWriter(Protocol):
    """What the recorder needs of PacketMp4Writer (tests inject failing ones)."""

    def write_packet(self, data: bytes, index: int, keyframe: bool) -> None: ...
    def write_audio(self, pcm: np.ndarray) -> None: ...
    def close(self) -> None: ...


WriterFactory = Callable[[Path, int, int], VideoWriter]


def mp4_writer(path: Path, width: int, height: int) -> VideoWriter:
    """The default writer: fragmented MP4, so a crash loses at most the last fragment."""
    return PacketMp4Writer(path, width, height)


EncodedFrame = tuple[bytes, bool]
"""A video packet's bytes and whether it is a keyframe."""
Item = tuple[str, int, "np.ndarray | EncodedFrame"]


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
        self._queue: queue.Queue[Item | None] = queue.Queue(QUEUE_ITEMS)
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"recorder-{path.stem}", daemon=True)
        self.dropped = 0
        self.frames = 0
        self.error: str | None = None
        self.stop_reason: str | None = None
        self.started = time.time()
        self._stopping = False
        self.done = asyncio.Event()
        self._video: Receiver | None = None
        self._pull: asyncio.Task[None] | None = None
        self._video_gap = False
        """A video packet was dropped: skip to the next keyframe."""

    @property
    def name(self) -> str:
        """The file name (what GET /api/recordings/{name} takes)."""
        return self.path.name

    def start(self) -> None:
        """Attach to the stream (its H.264 packets, its audio) and start the writer thread."""
        self._video = self.stream.media.video_receiver(H264, f"recording-{self.path.stem}")
        self._pull = self._loop.create_task(self._pull_video(self._video))
        self.stream.audio_listeners.append(self._on_audio)
        self._thread.start()
        log.info("session=%s recording %s started", self.stream.session_id, self.name)

    def _put(self, item: Item) -> bool:
        try:
            self._queue.put_nowait(item)
        except queue.Full:  # the writer is behind: the gap is filled later, time kept
            self.dropped += 1
            return False
        return True

    async def _pull_video(self, receiver: Receiver) -> None:
        while (packet := await receiver.get()) is not None:
            if packet.pts is None or packet.time_base is None:
                continue
            slot = round(packet.pts * packet.time_base * 25)
            keyframe = bool(packet.is_keyframe)
            if self._video_gap and not keyframe:
                self.dropped += 1
                continue
            self._video_gap = not self._put(("video", slot, (bytes(packet), keyframe)))
            if self._video_gap:
                receiver.request_keyframe()

    def _on_audio(self, slot: int, samples: np.ndarray) -> None:
        self._put(("audio", slot, samples))

    def stop(self, reason: str = "stopped") -> None:
        """Detach and let the writer finish the file (idempotent; returns at once)."""
        if self._stopping:
            return
        self._stopping = True
        self.stop_reason = self.stop_reason or reason
        if self._video is not None:
            self.stream.media.remove(self._video)  # ends _pull_video
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
                    assert isinstance(data, np.ndarray)
                    pending_audio.append((slot, data))
                    if s0 is None:
                        continue
                else:
                    assert isinstance(data, tuple)
                    payload, keyframe = data
                    if writer is None:
                        if not keyframe:
                            continue  # the file starts at the first keyframe
                        s0 = slot
                        writer = self._factory(self.path, *self.stream.frame_size)
                    assert s0 is not None
                    target = slot - s0
                    if target < self.frames:
                        continue  # out of order or duplicate: its slot is written
                    # A gap in the indices holds the previous picture on screen.
                    writer.write_packet(payload, target, keyframe)
                    self.frames = target + 1
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
