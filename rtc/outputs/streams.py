"""Named live streams: one session's released frames fanned out to any number of viewers.

A realtime session is a stream (named after the session unless the offer names it). Viewers
(WHEP players, the OBS page) get the very frames the session's own tracks release, so the
model runs once however many watch. The session's tracks call the stream's ``publish_*``
listeners at the moment its media clock releases a frame; each viewer track holds its own
small bounded queue and the oldest item is dropped when a viewer falls behind, so a slow
viewer loses frames and never slows the session or the other viewers.

Because a viewer's frame leaves when the session releases it, audio and video of a viewer
keep the session's pairing (browsers line tracks up by send time, see rtc/live/clock.py).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from typing import Generic, TypeVar

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from inference.mp4 import s16_audio_frame
from rtc.live.queues import DropOldestQueue
from rtc.webrtc.tracks import AvatarAudioTrack, AvatarVideoTrack

log = logging.getLogger(__name__)

T = TypeVar("T")

VIEWER_QUEUE_FRAMES = 6
"""Video frames (240 ms) a viewer may lag before its oldest ones are dropped."""
VIEWER_AUDIO_FRAMES = 25
"""20 ms audio frames (500 ms) a viewer may lag before its oldest ones are dropped. Dropped
audio leaves a gap in the timestamps (rtc/webrtc/encoding.py keeps each frame's pts), which the
player conceals; the bound is larger than the video's because gaps in sound are heard."""
STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Stream names (matched whole: ``re.match`` with ``$`` would take a final newline)."""


def new_stream_name() -> str:
    """A random stream name (12 URL-safe characters, so it fits STREAM_NAME)."""
    return "s-" + secrets.token_urlsafe(9)


"""Stream names appear in URLs (/whep/{stream}, /obs/{stream}): keep them URL-safe."""


class StreamFull(Exception):
    """The stream has as many viewers as it may have."""


class _ViewerTrack(MediaStreamTrack, Generic[T]):
    """What both viewer tracks share: a drop-oldest queue fed by the session's releases."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.queue: DropOldestQueue[tuple[int, T]] = DropOldestQueue(capacity)
        self.active = False
        """Set by the first recv(): items are queued only once the sender pulls, so a
        viewer still connecting does not receive a burst of stale frames."""
        self.sent = 0
        self.first_slot: int | None = None
        """Session clock slot of the first item sent (maps receiver pts to the clock)."""

    def offer(self, slot: int, item: T) -> None:
        """Listener of the session's track: what it released for clock ``slot``."""
        if self.active:
            self.queue.put((slot, item))

    async def _next(self) -> tuple[int, T]:
        """The next released item; MediaStreamError once the stream or viewer ended."""
        if self.readyState != "live":
            raise MediaStreamError
        self.active = True
        entry = await self.queue.get()
        if entry is None:
            self.stop()
            raise MediaStreamError
        if self.first_slot is None:
            self.first_slot = entry[0]
        self.sent += 1
        return entry


class ViewerVideoTrack(_ViewerTrack[av.VideoFrame]):
    """Video of one viewer: frames exactly as (and when) the session released them."""

    kind = "video"

    def __init__(self, capacity: int = VIEWER_QUEUE_FRAMES) -> None:
        super().__init__(capacity)

    async def recv(self) -> av.VideoFrame:
        """The next released frame; MediaStreamError once the stream or viewer ended."""
        _, frame = await self._next()
        return frame  # shared: the viewer's encoder copies it (rtc.webrtc.encoding.VideoEncoder)


class ViewerAudioTrack(_ViewerTrack[np.ndarray]):
    """Audio of one viewer: each 20 ms of s16 mono samples the session released, as a new
    AudioFrame."""

    kind = "audio"

    def __init__(self, capacity: int = VIEWER_AUDIO_FRAMES) -> None:
        super().__init__(capacity)

    async def recv(self) -> av.AudioFrame:
        """The next released audio frame; MediaStreamError once the stream or viewer ended."""
        slot, samples = await self._next()
        # A frame per viewer: each viewer's encoder reads it on its own.
        return s16_audio_frame(samples, slot * samples.size)


class Viewer:
    """One watcher of a stream: its two tracks and how to end its connection."""

    def __init__(self, stream: str, on_end: Callable[[Viewer], None]) -> None:
        self.id = secrets.token_urlsafe(9)
        self.stream = stream
        self.video = ViewerVideoTrack()
        self.audio = ViewerAudioTrack()
        self._on_end = on_end
        self.ended = False

    def end(self) -> None:
        """Stop the tracks and tell the owner (idempotent)."""
        if self.ended:
            return
        self.ended = True
        self.video.queue.close()
        self.audio.queue.close()
        self._on_end(self)

    def describe(self) -> dict[str, object]:
        """Counters for the API."""
        return {
            "viewer_id": self.id,
            "video_sent": self.video.sent,
            "audio_sent": self.audio.sent,
            "video_dropped": self.video.queue.dropped,
            "audio_dropped": self.audio.queue.dropped,
        }


class Stream:
    """A session's released frames and the viewers they are copied to."""

    def __init__(self, name: str, session_id: str, max_viewers: int) -> None:
        self.name = name
        self.session_id = session_id
        self.max_viewers = max_viewers
        self.viewers: dict[str, Viewer] = {}
        self.video_listeners: list[Callable[[int, av.VideoFrame], None]] = []
        """Other consumers of released frames (recordings); called like viewers are."""
        self.audio_listeners: list[Callable[[int, np.ndarray], None]] = []
        self.on_end: list[Callable[[Stream], None]] = []
        """Called once when the session ends (recordings stop there)."""

    def publish_video(self, slot: int, frame: av.VideoFrame) -> None:
        """Called by the session's video track as it releases ``frame`` for ``slot``."""
        for viewer in self.viewers.values():
            viewer.video.offer(slot, frame)
        for listener in self.video_listeners:
            listener(slot, frame)

    def publish_audio(self, slot: int, samples: np.ndarray) -> None:
        """Called by the session's audio track as it releases audio ``slot``."""
        for viewer in self.viewers.values():
            viewer.audio.offer(slot, samples)
        for listener in self.audio_listeners:
            listener(slot, samples)

    def add_viewer(self, on_end: Callable[[Viewer], None]) -> Viewer:
        """A new viewer; raises StreamFull at the limit."""
        if len(self.viewers) >= self.max_viewers:
            raise StreamFull(
                f"stream {self.name} already has {self.max_viewers} viewers "
                "(max_viewers_per_stream)"
            )
        viewer = Viewer(self.name, on_end)
        self.viewers[viewer.id] = viewer
        log.info(
            "session=%s viewer %s joined stream %s (%d watching)",
            self.session_id,
            viewer.id,
            self.name,
            len(self.viewers),
        )
        return viewer

    def remove_viewer(self, viewer_id: str) -> Viewer | None:
        """Forget and end a viewer; None if unknown."""
        viewer = self.viewers.pop(viewer_id, None)
        if viewer is not None:
            viewer.end()
            log.info("session=%s viewer %s left stream %s", self.session_id, viewer_id, self.name)
        return viewer

    def end(self) -> None:
        """The session ended: end every viewer."""
        for viewer_id in list(self.viewers):
            self.remove_viewer(viewer_id)
        callbacks, self.on_end = self.on_end, []
        for callback in callbacks:
            callback(self)

    def describe(self) -> dict[str, object]:
        """State for the API."""
        return {
            "stream": self.name,
            "session_id": self.session_id,
            "viewers": [v.describe() for v in self.viewers.values()],
            "max_viewers": self.max_viewers,
        }


class StreamRegistry:
    """Live streams by name."""

    def __init__(self, max_viewers: int) -> None:
        self.max_viewers = max_viewers
        self.streams: dict[str, Stream] = {}

    def get(self, name: str) -> Stream | None:
        """The live stream called ``name``."""
        return self.streams.get(name)

    def check_name(self, name: str) -> None:
        """Raise ValueError unless ``name`` is usable for a new stream."""
        if not STREAM_NAME.fullmatch(name):
            raise ValueError("'stream' must be 1-64 letters, digits, '-' or '_'")
        if name in self.streams:
            raise ValueError(f"stream {name!r} is already live; choose another name")

    def open(
        self, name: str, session_id: str, video: AvatarVideoTrack, audio: AvatarAudioTrack
    ) -> Stream:
        """Register a stream and attach it to the session's tracks' release listeners."""
        self.check_name(name)
        stream = Stream(name, session_id, self.max_viewers)
        self.streams[name] = stream
        video.release_listeners.append(stream.publish_video)
        audio.release_listeners.append(stream.publish_audio)
        return stream

    def close(self, name: str) -> None:
        """The session behind ``name`` ended."""
        stream = self.streams.pop(name, None)
        if stream is not None:
            stream.end()


__all__ = [
    "Stream",
    "StreamFull",
    "StreamRegistry",
    "Viewer",
    "ViewerAudioTrack",
    "ViewerVideoTrack",
]
