"""Media clock and paced tracks, driven by a hand-moved clock (no real waiting)."""

from __future__ import annotations

import asyncio
from typing import Any

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from rtc.live.clock import AUDIO_PER_VIDEO, AUDIO_SAMPLES, LoopTime, ManualTime, MediaClock
from rtc.live.queues import SlotQueue
from rtc.webrtc.tracks import MAX_AUDIO_CATCH_UP, AvatarAudioTrack, AvatarVideoTrack


def video_frame(value: int) -> av.VideoFrame:
    """A tiny frame whose luma is ``value`` (identifies it after the round trip)."""
    return av.VideoFrame.from_ndarray(np.full((24, 16), value, np.uint8), format="gray")


def luma(frame: av.VideoFrame) -> int:
    return int(frame.to_ndarray()[0, 0])


def audio_chunk(value: int) -> np.ndarray:
    return np.full(AUDIO_SAMPLES, value, np.int16)


class Rig:
    """A clock at t0 = 0, both queues and both tracks."""

    def __init__(self) -> None:
        self.time = ManualTime(0.0)
        self.clock = MediaClock(self.time, t0=0.0)
        self.video_q: SlotQueue[av.VideoFrame] = SlotQueue(64)
        self.audio_q: SlotQueue[np.ndarray] = SlotQueue(128)
        self.video = AvatarVideoTrack(self.clock, self.video_q, video_frame(0))
        self.audio = AvatarAudioTrack(self.clock, self.audio_q)

    async def recv_at(
        self, track: AvatarVideoTrack | AvatarAudioTrack, when: float
    ) -> tuple[Any, float]:
        """Start recv(), move the clock to ``when``; the frame and the time it came out."""
        task = asyncio.create_task(track.recv())
        await asyncio.sleep(0)
        self.time.set(when)
        frame = await task
        return frame, self.time.now()


def test_clock_slots() -> None:
    clock = MediaClock(ManualTime(10.0), t0=10.0)
    assert clock.video_time(25) == pytest.approx(11.0)
    assert clock.audio_time(50) == pytest.approx(11.0)
    assert clock.video_index_at(clock.video_time(7)) == 7  # float round-off tolerated
    assert clock.audio_index_at(clock.audio_time(13)) == 13
    assert AUDIO_PER_VIDEO == 2


async def test_manual_time_wakes_sleepers_in_order() -> None:
    time = ManualTime()
    woke: list[float] = []

    async def sleeper(when: float) -> None:
        await time.sleep_until(when)
        woke.append(when)

    tasks = [asyncio.create_task(sleeper(t)) for t in (0.3, 0.1, 0.2)]
    await asyncio.sleep(0)
    time.set(0.15)
    await asyncio.sleep(0)
    assert woke == [0.1]
    time.set(1.0)
    await asyncio.gather(*tasks)
    assert woke == [0.1, 0.2, 0.3]


async def test_loop_time_sleeps_until() -> None:
    source = LoopTime()
    target = source.now() + 0.02
    await source.sleep_until(target)
    assert source.now() >= target


def test_slot_queue_bounded_and_flushable() -> None:
    q: SlotQueue[str] = SlotQueue(3)
    assert q.put(1, "a") and q.put(2, "b") and q.put(3, "c")
    assert not q.put(4, "d")  # full: refused, not grown
    assert q.take(2) == "b"  # slot 1 is stale and dropped
    assert q.dropped == 1
    assert not q.put(2, "late")  # its slot has been taken
    assert q.put(5, "e")
    assert q.flush(after=4) == 1
    assert q.take(5) is None and q.take(3) is None
    assert len(q) == 0


async def test_video_released_on_slots_with_monotonic_pts() -> None:
    rig = Rig()
    for n in range(1, 11):
        rig.video_q.put(n, video_frame(n))
    seen = []
    for n in range(1, 11):
        frame, released = await rig.recv_at(rig.video, n * 0.04)
        assert released == pytest.approx(rig.clock.video_time(n))
        seen.append((frame.pts, luma(frame)))
    assert [p for p, _ in seen] == [n * 3600 for n in range(1, 11)]
    assert [v for _, v in seen] == list(range(1, 11))
    assert rig.video.stats.missing == 0


async def test_video_and_audio_leave_together() -> None:
    rig = Rig()
    for n in range(1, 6):
        rig.video_q.put(n, video_frame(10 * n))
        for k in range(2):
            rig.audio_q.put(2 * n + k, audio_chunk(10 * n + k))
    releases: dict[str, list[tuple[float, int]]] = {"video": [], "audio": []}

    async def pump(track: AvatarVideoTrack | AvatarAudioTrack, count: int) -> None:
        for _ in range(count):
            frame = await track.recv()
            if isinstance(frame, av.VideoFrame):
                releases["video"].append((rig.time.now(), luma(frame)))
            else:
                releases["audio"].append((rig.time.now(), int(frame.to_ndarray()[0, 0])))

    video = asyncio.create_task(pump(rig.video, 5))
    audio = asyncio.create_task(pump(rig.audio, 11))
    for step in range(1, 60):  # 5 ms steps: every due frame comes out at its slot
        await asyncio.sleep(0)
        rig.time.set(step * 0.005)
        await asyncio.sleep(0)
    await asyncio.gather(video, audio)
    audio_at = {value: t for t, value in releases["audio"]}
    for t, value in releases["video"]:
        n = value // 10
        # Frame n and its first 20 ms of audio are released at the same instant.
        assert audio_at[10 * n] == pytest.approx(t)
        assert audio_at[10 * n + 1] == pytest.approx(t + 0.02)


async def test_late_video_is_skipped_not_stretched() -> None:
    rig = Rig()
    for n in range(1, 11):
        rig.video_q.put(n, video_frame(n))
    frame, _ = await rig.recv_at(rig.video, 0.04)
    assert luma(frame) == 1
    rig.time.set(0.21)  # the consumer stalls past slots 2..4
    frame = await rig.video.recv()
    assert luma(frame) == 5 and frame.pts == 5 * 3600  # pts follows the wall clock
    assert rig.video.stats.skipped == 3
    frame, _ = await rig.recv_at(rig.video, 0.24)
    assert luma(frame) == 6
    assert rig.video_q.dropped == 3


async def test_missing_video_repeats_the_last_picture() -> None:
    rig = Rig()
    rig.video_q.put(1, video_frame(7))
    rig.video_q.put(3, video_frame(9))
    values = []
    for n in (1, 2, 3):
        frame, _ = await rig.recv_at(rig.video, n * 0.04)
        values.append((luma(frame), frame.pts))
    assert values == [(7, 3600), (7, 7200), (9, 10800)]
    assert rig.video.stats.missing == 1


async def test_audio_never_waits_for_video() -> None:
    rig = Rig()  # nothing queued at all: the generator is stuck
    pts = []
    for k in range(1, 11):
        frame, released = await rig.recv_at(rig.audio, k * 0.02)
        assert released == pytest.approx(k * 0.02)
        assert not frame.to_ndarray().any()  # silence, on time
        pts.append(frame.pts)
    assert pts == [k * AUDIO_SAMPLES for k in range(1, 11)]
    assert rig.audio.stats.missing == 10


async def test_audio_catches_up_after_a_short_stall_and_skips_a_long_one() -> None:
    rig = Rig()
    for k in range(1, 40):
        rig.audio_q.put(k, audio_chunk(k))
    await rig.recv_at(rig.audio, 0.02)
    rig.time.set(0.02 + 5 * 0.02)  # 100 ms stall: the missed slots go out back to back
    burst = [await rig.audio.recv() for _ in range(5)]
    assert [int(f.to_ndarray()[0, 0]) for f in burst] == [2, 3, 4, 5, 6]
    rig.time.set(0.5)  # a long stall: skip ahead instead of piling up delay
    frame = await rig.audio.recv()
    assert frame.pts == rig.clock.audio_index_at(0.5) * AUDIO_SAMPLES
    assert rig.audio.stats.skipped > MAX_AUDIO_CATCH_UP


async def test_stopped_track_raises() -> None:
    rig = Rig()
    rig.video.stop()
    with pytest.raises(MediaStreamError):
        await rig.video.recv()
