"""Named live streams: one session's encoded media fanned out to any number of viewers.

A realtime session is a stream (a random name unless the offer names one). Viewers (WHEP
players, the OBS page) and recordings receive the very packets the session's own peer gets,
from the stream's one encoder per codec (rtc/webrtc/fanout.py), so neither the model nor the
encoder runs again however many watch. Each viewer has its own small bounded queue: a slow
viewer skips to the next keyframe and never slows the session or the other viewers.

Because every receiver's packets carry the session's own timestamps, audio and video of a
viewer keep the session's pairing (browsers line tracks up by send time, see rtc/live/clock.py).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from typing import Protocol

import numpy as np

from rtc.webrtc.fanout import MediaFanout, PacketTrack, Receiver
from rtc.webrtc.tracks import AvatarAudioTrack

log = logging.getLogger(__name__)

STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Stream names appear in URLs (/whep/{stream}, /obs/{stream}): URL-safe, matched whole
(``re.match`` with ``$`` would take a final newline)."""


def new_stream_name() -> str:
    """A random stream name (12 URL-safe characters, so it fits STREAM_NAME)."""
    return "s-" + secrets.token_urlsafe(9)


class PublicationView(Protocol):
    """What the stream (and /metrics) read of a publication."""

    id: str
    state: str
    retries: int


class StreamFull(Exception):
    """The stream has as many viewers as it may have."""


class Viewer:
    """One watcher of a stream: its two packet tracks (attached to the stream's fan-out once
    its answer fixed the codec) and how to end its connection."""

    def __init__(self, stream: Stream, on_end: Callable[[Viewer], None]) -> None:
        self.id = secrets.token_urlsafe(9)
        self.stream = stream.name
        self.media = stream.media
        self.video = PacketTrack("video")
        self.audio = PacketTrack("audio")
        self._on_end = on_end
        self.ended = False

    def attach(self, mime_type: str) -> Receiver:
        """Receive the stream's ``mime_type`` video and its audio; the video receiver (for
        the sender's keyframe requests and estimates)."""
        video = self.media.video_receiver(mime_type, self.id)
        self.video.attach(video, self.media.remove)
        self.audio.attach(self.media.audio_receiver(self.id), self.media.remove)
        return video

    def end(self) -> None:
        """Stop the tracks (their receivers leave the fan-out) and tell the owner
        (idempotent)."""
        if self.ended:
            return
        self.ended = True
        for track in (self.video, self.audio):
            track.stop()  # its receiver leaves the fan-out (attach gave it media.remove)
        self._on_end(self)

    def describe(self) -> dict[str, object]:
        """Counters for the API."""
        out: dict[str, object] = {"viewer_id": self.id}
        for kind, track in (("video", self.video), ("audio", self.audio)):
            receiver = track.receiver
            out[f"{kind}_sent"] = receiver.sent if receiver is not None else 0
            out[f"{kind}_dropped"] = receiver.dropped if receiver is not None else 0
        video = self.video.receiver
        out["codec"] = video.codec if video is not None else None
        out["keyframe_requests"] = video.keyframe_requests if video is not None else 0
        out["below_floor"] = video.below_floor if video is not None else False
        return out


class Stream:
    """A session's released frames and the viewers they are copied to."""

    def __init__(
        self,
        name: str,
        session_id: str,
        max_viewers: int,
        media: MediaFanout,
        frame_size: tuple[int, int],
    ) -> None:
        self.name = name
        self.session_id = session_id
        self.max_viewers = max_viewers
        self.media = media
        """The session's encoders and their receivers (its own peer, viewers, recordings)."""
        self.frame_size = frame_size
        """(width, height) of its pictures (a recording's MP4 header needs them)."""
        self.viewers: dict[str, Viewer] = {}
        self.audio_listeners: list[Callable[[int, np.ndarray], None]] = []
        """Consumers of the released audio samples (recordings encode AAC from them)."""
        self.on_end: list[Callable[[Stream], None]] = []
        """Called once when the session ends (recordings stop there)."""
        self.publications: dict[str, PublicationView] = {}
        """Its publications into media servers (rtc/outputs/publish.py), by id."""

    def publish_audio(self, slot: int, samples: np.ndarray) -> None:
        """Called by the session's audio track as it releases audio ``slot``."""
        for listener in self.audio_listeners:
            listener(slot, samples)

    def add_viewer(self, on_end: Callable[[Viewer], None]) -> Viewer:
        """A new viewer; raises StreamFull at the limit."""
        if len(self.viewers) >= self.max_viewers:
            raise StreamFull(
                f"stream {self.name} already has {self.max_viewers} viewers "
                "(max_viewers_per_stream)"
            )
        viewer = Viewer(self, on_end)
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
            "encoders": self.media.describe()["encoders"],
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
        self,
        name: str,
        session_id: str,
        media: MediaFanout,
        audio: AvatarAudioTrack,
        frame_size: tuple[int, int],
    ) -> Stream:
        """Register a stream of ``media``; its audio listeners hear ``audio``'s releases."""
        self.check_name(name)
        stream = Stream(name, session_id, self.max_viewers, media, frame_size)
        self.streams[name] = stream
        audio.release_listeners.append(stream.publish_audio)
        return stream

    def close(self, name: str) -> None:
        """The session behind ``name`` ended."""
        stream = self.streams.pop(name, None)
        if stream is not None:
            stream.end()


__all__ = ["Stream", "StreamFull", "StreamRegistry", "Viewer"]
