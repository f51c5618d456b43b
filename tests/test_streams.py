"""Stream fan-out (rtc/outputs/streams.py) on the real media clock: a slow viewer only loses frames.

The session's own tracks release frames at 25 fps / 50 audio frames per second; one viewer
reads every frame as a WHEP sender would, another stalls (a viewer whose network or encoder
cannot keep up). The stalled viewer's queues stay at their bounds and count drops, while the
session's tracks and the other viewer go on receiving fresh frames at rate. No WebRTC here:
the fan-out objects are what decide whether one viewer can hold up the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from rtc.live.clock import AUDIO_PERIOD, AUDIO_SAMPLES, VIDEO_PERIOD, MediaClock
from rtc.live.queues import SlotQueue
from rtc.outputs.streams import VIEWER_AUDIO_FRAMES, VIEWER_QUEUE_FRAMES, StreamRegistry
from rtc.webrtc.tracks import AvatarAudioTrack, AvatarVideoTrack

pytestmark = pytest.mark.timeout(30)

RUN_SECONDS = 2.0
SLOW_PERIOD = 0.5
"""The slow viewer reads one video and one audio frame this often (25 and 50 times too
slowly)."""


@dataclass
class Reader:
    """What one consumer of a track got: (clock slot of the item, the clock's slot then)."""

    got: list[tuple[int, int]] = field(default_factory=list)

    def lags(self) -> list[int]:
        return [current - slot for slot, current in self.got]

    def gaps(self) -> list[int]:
        slots = [slot for slot, _ in self.got]
        return [b - a for a, b in itertools.pairwise(slots)]


async def read(
    recv: Callable[[], Awaitable[av.frame.Frame]],
    slot_of: Callable[[int], int],
    now: Callable[[], int],
    reader: Reader,
    period: float = 0.0,
) -> None:
    with contextlib.suppress(MediaStreamError):
        while True:
            frame = await recv()
            reader.got.append((slot_of(int(frame.pts or 0)), now()))
            if period:
                await asyncio.sleep(period)


async def test_a_slow_viewer_drops_its_own_frames_and_blocks_nobody() -> None:
    clock = MediaClock()
    video_queue: SlotQueue[av.VideoFrame] = SlotQueue(64)
    audio_queue: SlotQueue[np.ndarray] = SlotQueue(128)
    first = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="bgr24")
    video = AvatarVideoTrack(clock, video_queue, first)
    audio = AvatarAudioTrack(clock, audio_queue)
    stream = StreamRegistry(max_viewers=4).open("talk", "session", video, audio)
    fast = stream.add_viewer(lambda _: None)
    slow = stream.add_viewer(lambda _: None)

    async def produce() -> None:  # the pipeline's part: a fresh picture and audio every slot
        slot = clock.current_video_index()
        while True:
            slot = max(slot + 1, clock.current_video_index() + 1)
            picture = av.VideoFrame.from_ndarray(
                np.full((64, 64, 3), slot % 256, np.uint8), format="bgr24"
            )
            video_queue.put(slot, picture)
            for k in (0, 1):
                audio_queue.put(2 * slot + k, np.full(AUDIO_SAMPLES, slot, np.int16))
            await clock.wait_video(slot)

    video_slot = clock.current_video_index
    audio_slot = clock.current_audio_index
    per_video = 90_000 // 25  # pts units per video slot (the 90 kHz clock)
    readers = {
        name: Reader()
        for name in (
            "session_video",
            "session_audio",
            "fast_video",
            "fast_audio",
            "slow_video",
            "slow_audio",
        )
    }
    tasks = [
        asyncio.create_task(produce()),
        asyncio.create_task(
            read(video.recv, lambda pts: pts // per_video, video_slot, readers["session_video"])
        ),
        asyncio.create_task(
            read(audio.recv, lambda pts: pts // AUDIO_SAMPLES, audio_slot, readers["session_audio"])
        ),
        asyncio.create_task(
            read(fast.video.recv, lambda pts: pts // per_video, video_slot, readers["fast_video"])
        ),
        asyncio.create_task(
            read(
                fast.audio.recv, lambda pts: pts // AUDIO_SAMPLES, audio_slot, readers["fast_audio"]
            )
        ),
        asyncio.create_task(
            read(
                slow.video.recv,
                lambda pts: pts // per_video,
                video_slot,
                readers["slow_video"],
                SLOW_PERIOD,
            )
        ),
        asyncio.create_task(
            read(
                slow.audio.recv,
                lambda pts: pts // AUDIO_SAMPLES,
                audio_slot,
                readers["slow_audio"],
                SLOW_PERIOD,
            )
        ),
    ]
    bounded = True
    try:
        deadline = clock.now() + RUN_SECONDS
        while clock.now() < deadline:  # the slow viewer's backlog never grows past its bound
            await asyncio.sleep(0.1)
            bounded &= len(slow.video.queue) <= VIEWER_QUEUE_FRAMES
            bounded &= len(slow.audio.queue) <= VIEWER_AUDIO_FRAMES
    finally:
        stream.end()  # ends the viewers' reads
        video.stop()
        audio.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    assert bounded
    # The slow viewer lost frames (counted), and only from its own queues.
    assert slow.video.queue.dropped > 0 and slow.audio.queue.dropped > 0
    assert fast.video.queue.dropped == 0 and fast.audio.queue.dropped == 0
    assert len(readers["slow_video"].got) <= RUN_SECONDS / SLOW_PERIOD + 2
    # The session's tracks and the fast viewer kept the rate (a loaded machine may miss a
    # few slots: 80 % of them is far above what a blocked fan-out would allow) ...
    for track, period in (("video", VIDEO_PERIOD), ("audio", AUDIO_PERIOD)):
        expected = RUN_SECONDS / period
        for who in ("session", "fast"):
            reader = readers[f"{who}_{track}"]
            assert len(reader.got) >= 0.8 * expected, (who, track, len(reader.got))
            assert max(reader.gaps()) <= 5, (who, track, reader.gaps())
        # ... and got fresh frames: each within a few slots of the clock when it arrived,
        # the fast viewer exactly the session's frames.
        assert max(readers[f"session_{track}"].lags()) <= 3
        assert max(readers[f"fast_{track}"].lags()) <= 3
        session_slots = {slot for slot, _ in readers[f"session_{track}"].got}
        assert {slot for slot, _ in readers[f"fast_{track}"].got} <= session_slots
    assert video.stats.skipped <= 5 and audio.stats.skipped == 0
