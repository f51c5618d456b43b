"""Encode once, fan out (rtc/webrtc/fanout.py, rtc/outputs/streams.py) on the real media clock.

A producer plays the pipeline's part (a fresh picture and audio every slot); the session's
clock-paced tracks release them; the stream's one encoder per codec feeds every receiver.
No WebRTC here: these objects are what decide whether receivers share packets, whether a
joiner can decode at once, and whether one viewer can hold up or degrade the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import av
import cv2
import numpy as np
import pytest

from config import PROJECT_ROOT
from rtc.live.clock import AUDIO_SAMPLES, MediaClock
from rtc.live.queues import SlotQueue
from rtc.outputs.streams import StreamRegistry
from rtc.webrtc.encoding import H264, VP8, VideoEncoder
from rtc.webrtc.fanout import (
    VIDEO_QUEUE_PACKETS,
    FanoutSettings,
    MediaFanout,
    Receiver,
    VideoGroup,
    encode_pool,
)
from rtc.webrtc.tracks import AvatarAudioTrack, AvatarVideoTrack

pytestmark = pytest.mark.timeout(60)

DECODERS = {H264: "h264", VP8: "libvpx"}


@dataclass
class Rig:
    clock: MediaClock
    media: MediaFanout
    video: AvatarVideoTrack
    audio: AvatarAudioTrack
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def picture(slot: int) -> av.VideoFrame:
    """The astronaut with a moving bar, so every frame differs from the last."""
    photo = cv2.imread(str(PROJECT_ROOT / "avatars" / "astronaut.jpg"))
    assert photo is not None
    image = np.ascontiguousarray(cv2.resize(photo, (128, 128)), dtype=np.uint8)
    cv2.rectangle(image, (0, slot % 120), (127, slot % 120 + 8), (40, 200, 90), -1)
    return av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")


@contextlib.asynccontextmanager
async def rig(settings: FanoutSettings | None = None) -> AsyncIterator[Rig]:
    clock = MediaClock()
    video_queue: SlotQueue[av.VideoFrame] = SlotQueue(64)
    audio_queue: SlotQueue[np.ndarray] = SlotQueue(128)
    video = AvatarVideoTrack(clock, video_queue, picture(0))
    audio = AvatarAudioTrack(clock, audio_queue)
    media = MediaFanout(video, audio, settings or FanoutSettings(), name="test")

    async def produce() -> None:  # the pipeline's part: a fresh picture and audio every slot
        slot = clock.current_video_index()
        while True:
            slot = max(slot + 1, clock.current_video_index() + 1)
            video_queue.put(slot, picture(slot))
            for k in (0, 1):
                audio_queue.put(2 * slot + k, np.full(AUDIO_SAMPLES, 1000, np.int16))
            await clock.wait_video(slot)

    r = Rig(clock, media, video, audio, [asyncio.create_task(produce())])
    media.start()
    try:
        yield r
    finally:
        await media.close()
        video.stop()
        audio.stop()
        for task in r.tasks:
            task.cancel()
        await asyncio.gather(*r.tasks, return_exceptions=True)


@dataclass
class Reader:
    """What one receiver got: the packets, and the clock slot when each arrived."""

    packets: list[av.Packet] = field(default_factory=list)
    arrived: list[int] = field(default_factory=list)
    paused: asyncio.Event = field(default_factory=asyncio.Event)


async def read(receiver: Receiver, reader: Reader, clock: MediaClock) -> None:
    while True:
        if reader.paused.is_set():  # a viewer that stopped reading (a stalled network)
            await asyncio.sleep(0.02)
            continue
        packet = await receiver.get()
        if packet is None:
            return
        reader.packets.append(packet)
        reader.arrived.append(clock.current_video_index())


def start_reading(r: Rig, receiver: Receiver) -> Reader:
    reader = Reader()
    r.tasks.append(asyncio.create_task(read(receiver, reader, r.clock)))
    return reader


async def until(condition: object, seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.02)


def decode_all(mime_type: str, packets: list[av.Packet]) -> int:
    """How many of ``packets`` decode, starting from the first: raises on a broken stream."""
    decoder = av.CodecContext.create(DECODERS[mime_type], "r")
    assert isinstance(decoder, av.VideoCodecContext)
    frames = 0
    for packet in packets:
        frames += len(decoder.decode(av.Packet(bytes(packet))))
    return frames


@pytest.mark.parametrize("codec", [VP8, H264])
async def test_viewers_share_one_encoder_and_get_identical_payloads(codec: str) -> None:
    async with rig() as r:
        a = start_reading(r, r.media.video_receiver(codec, "a"))
        b = start_reading(r, r.media.video_receiver(codec, "b"))
        await until(lambda: len(a.packets) >= 20 and len(b.packets) >= 20)
        assert list(r.media.groups) == [codec]  # one encoder for both
        group = r.media.groups[codec]
    pts_a = {int(p.pts or 0): bytes(p) for p in a.packets}
    pts_b = {int(p.pts or 0): bytes(p) for p in b.packets}
    common = sorted(set(pts_a) & set(pts_b))
    assert len(common) >= 15
    assert all(pts_a[t] == pts_b[t] for t in common)  # byte for byte the same packets
    assert group.packets <= r.video.stats.sent  # encoded once per released frame


async def test_video_is_encoded_on_the_encode_pool_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """x264/libvpx run on the bounded encode pool: never on the loop, the default executor
    (TTS, decoding) or the batcher's thread."""
    threads: list[str] = []
    encode = VideoEncoder.encode

    def spy(self: VideoEncoder, frame: av.VideoFrame, keyframe: bool = False) -> av.Packet:
        threads.append(threading.current_thread().name)
        return encode(self, frame, keyframe)

    monkeypatch.setattr(VideoEncoder, "encode", spy)
    async with rig() as r:
        reader = start_reading(r, r.media.video_receiver(VP8, "a"))
        await until(lambda: len(reader.packets) >= 5)
    assert threads and all(name.startswith("encode") for name in threads), set(threads)
    assert encode_pool()._max_workers == (os.cpu_count() or 1)


async def test_codec_groups_at_most_one_encoder_per_codec() -> None:
    async with rig() as r:
        readers = [
            start_reading(r, r.media.video_receiver(codec, f"v{k}"))
            for k, codec in enumerate((VP8, H264, VP8, H264, VP8))
        ]
        await until(lambda: all(len(x.packets) >= 5 for x in readers))
        assert sorted(r.media.groups) == sorted([VP8, H264])
        assert [len(g.receivers) for g in r.media.groups.values()] in ([3, 2], [2, 3])
        for x, codec in zip(readers, (VP8, H264, VP8, H264, VP8), strict=True):
            assert decode_all(codec, x.packets) == len(x.packets)
        # The last H.264 receiver leaving frees that encoder.
        for receiver in list(r.media.groups[H264].receivers):
            r.media.remove(receiver)
        assert list(r.media.groups) == [VP8]


@pytest.mark.parametrize("codec", [VP8, H264])
async def test_a_joiner_decodes_from_its_first_packet(codec: str) -> None:
    async with rig() as r:
        first = start_reading(r, r.media.video_receiver(codec, "first"))
        await until(lambda: len(first.packets) >= 30)  # well past the stream's first keyframe
        joiner = start_reading(r, r.media.video_receiver(codec, "joiner"))
        await until(lambda: len(joiner.packets) >= 10)
        joined_at = r.media.groups[codec].receivers[1].first_slot
    assert joiner.packets[0].is_keyframe
    # Forced at once (no keyframe had been forced in the last 500 ms): the joiner's first
    # picture arrives within a frame interval or two of its first pull.
    assert joined_at is not None and joiner.arrived[0] - joined_at <= 2
    assert decode_all(codec, joiner.packets) == len(joiner.packets)


async def test_a_stalled_viewer_skips_whole_gops_and_slows_nobody() -> None:
    async with rig(FanoutSettings(keyframe_gap=0.5)) as r:
        fast = start_reading(r, r.media.video_receiver(VP8, "fast"))
        slow_receiver = r.media.video_receiver(VP8, "slow")
        slow = start_reading(r, slow_receiver)
        await until(lambda: len(slow.packets) >= 5)
        slow.paused.set()
        before = len(fast.packets)
        await asyncio.sleep(1.2)  # 30 frames: far more than its queue holds
        assert slow_receiver.depth <= VIDEO_QUEUE_PACKETS
        assert slow_receiver.dropped > 0  # its own loss, counted
        fast_during = len(fast.packets) - before
        slow.paused.clear()
        resumed_at = len(slow.packets)
        await until(lambda: len(slow.packets) >= resumed_at + 15)
        fast_receiver = r.media.groups[VP8].receivers[0]
    # The others kept the rate and stayed fresh (a loaded machine may miss a few slots).
    assert fast_during >= 0.8 * 1.2 * 25, fast_during
    assert fast_receiver.dropped == 0
    lags = [
        arrived - round((p.pts or 0) * (p.time_base or 0) * 25)
        for p, arrived in zip(fast.packets, fast.arrived, strict=True)
    ]
    assert max(lags) <= 3, lags
    # What the slow viewer got after its stall decodes cleanly: queued packets up to the
    # overflow, then a keyframe; never a delta whose reference it missed.
    assert decode_all(VP8, slow.packets) == len(slow.packets)
    assert any(p.is_keyframe for p in slow.packets[resumed_at - 1 :])


async def test_keyframe_requests_are_coalesced() -> None:
    async with rig(FanoutSettings(keyframe_gap=0.5)) as r:
        receiver = r.media.video_receiver(VP8, "lossy")
        reader = start_reading(r, receiver)
        await until(lambda: len(reader.packets) >= 5)
        group = r.media.groups[VP8]
        forced_before = group.forced_keyframes
        for _ in range(40):  # a PLI storm: 40 requests in 2 s
            receiver.request_keyframe()
            await asyncio.sleep(0.05)
        forced = group.forced_keyframes - forced_before
        keyframes = sum(1 for p in reader.packets[5:] if p.is_keyframe)
    assert receiver.keyframe_requests >= 41
    # At most one per 500 ms (2 s -> 4 or 5), yet the requester was answered.
    assert 2 <= forced <= 5, forced
    assert keyframes <= forced + 1


def test_bitrate_follows_the_lowest_receiver_down_to_the_floor() -> None:
    group = VideoGroup(VP8, FanoutSettings(video_bitrate=1_000_000, min_video_bitrate=200_000))
    estimates = {"a": 900_000, "b": 400_000}
    for name in estimates:
        receiver = Receiver(name, "video", 8, group.request_keyframe, codec=VP8)
        receiver.estimate = lambda name=name: estimates[name]  # type: ignore[misc]
        group.receivers.append(receiver)
    group.next_frame_options()
    assert group.encoder.bitrate == 400_000
    estimates["b"] = 50_000  # a viewer on a very bad link: reported, not followed
    group.next_frame_options()
    assert group.encoder.bitrate == 200_000
    assert [r.below_floor for r in group.receivers] == [False, True]
    estimates["b"] = 2_000_000  # recovered: back to the lowest honest estimate
    group.next_frame_options()
    assert group.encoder.bitrate == 900_000 and not group.receivers[1].below_floor


async def test_stream_viewers_and_their_end() -> None:
    async with rig() as r:
        stream = StreamRegistry(max_viewers=2).open("talk", "session", r.media, r.audio, (128, 128))
        ended: list[str] = []
        viewer = stream.add_viewer(lambda v: ended.append(v.id))
        viewer.attach(VP8)
        assert viewer.video.receiver is not None
        reader = start_reading(r, viewer.video.receiver)
        await until(lambda: len(reader.packets) >= 3)
        described = viewer.describe()
        assert described["codec"] == VP8 and described["video_sent"] == len(reader.packets)
        stream.remove_viewer(viewer.id)
        assert ended == [viewer.id] and r.media.groups == {}
        assert r.media.audio_receivers == []
