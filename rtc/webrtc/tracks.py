"""The session's outgoing tracks: they only pace.

``recv()`` waits for the session's :class:`~rtc.live.clock.MediaClock`, takes the frame of the
current slot from a bounded :class:`SlotQueue` and stamps its pts; nothing is computed here.
Late video is skipped (its slot is gone) and the previous picture repeated; audio never
waits for video: an empty audio slot is sent as silence, so time is never stretched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from inference.frames import SAMPLE_RATE
from inference.mp4 import s16_audio_frame
from rtc.live.clock import AUDIO_SAMPLES, MediaClock
from rtc.live.queues import SlotQueue

log = logging.getLogger(__name__)


VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_TIME_BASE = Fraction(1, SAMPLE_RATE)
MAX_AUDIO_CATCH_UP = 10
"""Audio slots (200 ms) a late audio track sends back-to-back before it skips ahead instead."""


@dataclass
class TrackStats:
    """What a track did, for tests, logs and the API."""

    sent: int = 0
    missing: int = 0
    """Slots with nothing queued (video: previous picture repeated; audio: silence)."""
    skipped: int = 0
    """Slots passed over because recv() was called after they were due."""
    first_slot: int | None = None
    """Clock slot of the first frame sent (maps a receiver's pts back to the session clock)."""


class AvatarVideoTrack(MediaStreamTrack):
    """Video released at ``t0 + n/25`` with pts ``n`` in 1/25 s (90 kHz units)."""

    kind = "video"

    def __init__(
        self, clock: MediaClock, queue: SlotQueue[av.VideoFrame], first: av.VideoFrame
    ) -> None:
        super().__init__()
        self.clock = clock
        self.queue = queue
        self.stats = TrackStats()
        self._last = first
        self._next: int | None = None
        self.release_listeners: list[Callable[[int, av.VideoFrame], None]] = []
        """Called with (slot, frame) as each frame is released (stream viewers, recordings)."""

    async def recv(self) -> av.VideoFrame:
        """The frame of the next video slot, released at its time."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._next is None:
            self._next = self.clock.current_video_index() + 1
        slot = self._next
        await self.clock.wait_video(slot)
        current = self.clock.current_video_index()
        if current > slot:  # called late (slow encoder, busy loop): that slot is gone
            self.stats.skipped += current - slot
            slot = current
        if self.stats.first_slot is None:
            self.stats.first_slot = slot
        frame = self.queue.take(slot)
        if frame is None:
            self.stats.missing += 1
            frame = self._last
        self._last = frame
        # A repeated frame object is re-stamped; aiortc encodes one frame at a time per
        # sender, so the previous use is finished.
        frame.pts = slot * (VIDEO_CLOCK_RATE // 25)
        frame.time_base = VIDEO_TIME_BASE
        self._next = slot + 1
        self.stats.sent += 1
        for listener in self.release_listeners:
            listener(slot, frame)
        return frame


class AvatarAudioTrack(MediaStreamTrack):
    """20 ms s16 mono 16 kHz frames released at ``t0 + k*0.02``; silence when none queued."""

    kind = "audio"

    def __init__(self, clock: MediaClock, queue: SlotQueue[np.ndarray]) -> None:
        super().__init__()
        self.clock = clock
        self.queue = queue
        self.stats = TrackStats()
        self._next: int | None = None
        self.release_listeners: list[Callable[[int, np.ndarray], None]] = []
        """Called with (slot, s16 samples) as each audio frame is released."""

    async def recv(self) -> av.AudioFrame:
        """The audio of the next slot, released at its time; never waits for video."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._next is None:
            self._next = self.clock.current_audio_index() + 1
        slot = self._next
        await self.clock.wait_audio(slot)
        current = self.clock.current_audio_index()
        if current - slot > MAX_AUDIO_CATCH_UP:
            # Far behind (the loop stalled): sending every missed slot would only add delay.
            self.stats.skipped += current - slot
            slot = current
        if self.stats.first_slot is None:
            self.stats.first_slot = slot
        samples = self.queue.take(slot)
        if samples is None:
            self.stats.missing += 1
            samples = np.zeros(AUDIO_SAMPLES, np.int16)
        frame = s16_audio_frame(samples, slot * AUDIO_SAMPLES)
        self._next = slot + 1
        self.stats.sent += 1
        for listener in self.release_listeners:
            listener(slot, samples)
        return frame
