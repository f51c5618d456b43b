"""One media clock per session: it decides when each video and audio frame leaves.

Browsers line audio and video up by *when* each frame was sent (RTCP sender reports pair the
send wall-clock with the RTP timestamp), not by pts alone. So both tracks of a session are
released by one clock with one start ``t0``: video frame ``n`` at ``t0 + n/25``, audio frame
``k`` (20 ms) at ``t0 + k*0.02``; video frame ``n`` and audio frames ``2n, 2n+1`` leave
together. The time source is injectable so tests can drive time by hand.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from typing import Protocol

from inference.frames import FPS, SAMPLE_RATE

AUDIO_PERIOD = 0.02
"""Seconds of audio per audio frame (aiortc's Opus packetisation)."""
VIDEO_PERIOD = 1.0 / FPS
AUDIO_PER_VIDEO = round(VIDEO_PERIOD / AUDIO_PERIOD)
"""Audio frames released with each video frame (2 at 25 fps)."""
AUDIO_SAMPLES = round(SAMPLE_RATE * AUDIO_PERIOD)
"""Samples per 20 ms audio frame at the pipeline rate (320)."""


class TimeSource(Protocol):
    """Monotonic seconds and a way to sleep until a point on that scale."""

    def now(self) -> float:
        """Current time in seconds."""
        ...

    async def sleep_until(self, when: float) -> None:
        """Return at (or soon after) ``when``; at once if it has passed."""
        ...


class LoopTime:
    """The running event loop's monotonic clock (what aiortc and asyncio timers use)."""

    def now(self) -> float:
        """``loop.time()``."""
        return asyncio.get_running_loop().time()

    async def sleep_until(self, when: float) -> None:
        """Sleep with asyncio until ``when``."""
        delay = when - self.now()
        if delay > 0:
            await asyncio.sleep(delay)


class ManualTime:
    """A time source tests move by hand: sleepers wake only when :meth:`set` reaches them."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        """The time last set."""
        return self._now

    def set(self, when: float) -> None:
        """Move time to ``when`` (never backwards) and wake every sleeper due by then."""
        self._now = max(self._now, when)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        self.set(self._now + seconds)

    async def sleep_until(self, when: float) -> None:
        """Wait until a :meth:`set` reaches ``when``."""
        if when <= self._now:
            await asyncio.sleep(0)  # still a scheduling point, like a real zero sleep
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._seq), future))
        await future


class MediaClock:
    """Release times of a session's frames, all measured from one start ``t0``."""

    def __init__(self, time: TimeSource | None = None, t0: float | None = None) -> None:
        self.time: TimeSource = time or LoopTime()
        self.t0 = self.time.now() if t0 is None else t0

    def now(self) -> float:
        """Current time on the clock's time source."""
        return self.time.now()

    def video_time(self, index: int) -> float:
        """When video frame ``index`` is released."""
        return self.t0 + index * VIDEO_PERIOD

    def audio_time(self, index: int) -> float:
        """When 20 ms audio frame ``index`` is released."""
        return self.t0 + index * AUDIO_PERIOD

    def video_index_at(self, when: float) -> int:
        """The video slot that is current at ``when`` (released at or before it)."""
        # A hair of tolerance: t0 + n/25 computed in floats may land just below n.
        return math.floor((when - self.t0) * FPS + 1e-6)

    def audio_index_at(self, when: float) -> int:
        """The audio slot that is current at ``when``."""
        return math.floor((when - self.t0) / AUDIO_PERIOD + 1e-6)

    def current_video_index(self) -> int:
        """The video slot current now."""
        return self.video_index_at(self.now())

    def current_audio_index(self) -> int:
        """The audio slot current now."""
        return self.audio_index_at(self.now())

    async def wait_video(self, index: int) -> None:
        """Sleep until video frame ``index`` is due."""
        await self.time.sleep_until(self.video_time(index))

    async def wait_audio(self, index: int) -> None:
        """Sleep until audio frame ``index`` is due."""
        await self.time.sleep_until(self.audio_time(index))
