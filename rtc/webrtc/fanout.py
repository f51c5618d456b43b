"""Encode once per stream, send the same packets to every receiver.

A session's released frames are encoded once per video codec in use (VP8 and H.264: at most
two encoders per stream) and once to Opus, and cut into RTP payloads once per codec; every
receiver gets the same packets: the session's own peer, every WHEP viewer and Janus
publication (pushed to, rtc/webrtc/packet_sender.py: their senders only stamp headers and
encrypt) and the recorder (a bounded queue it pulls from, rtc/webrtc/fanout_receiver.py). So
32 viewers cost about what one does.

What one receiver does never makes the others' picture worse:

- **Keyframes on demand, coalesced.** A receiver that starts, or whose player lost packets
  (RTCP PLI/FIR), asks its codec group for a keyframe. The group forces at most one every
  ``keyframe_gap`` seconds (0.5 by default); a request inside the gap is served when it ends.
  A keyframe costs every viewer a burst of bits, so one lossy viewer cannot flood the rest.
- **A slow receiver skips whole GOPs.** When its queue is full everything queued is dropped
  and it waits for the next keyframe: it never gets a partial GOP (a decoder fed one shows
  smears until the next keyframe anyway) and its picture recovers cleanly. Others never wait.
- **Bitrate follows the weakest receiver, down to a floor.** The encoder takes the lowest
  REMB estimate among its receivers, but never below ``min_video_bitrate``; a receiver
  estimating less than that is reported (``below_floor``), not followed, so one bad link
  cannot drag everyone's picture down to what it can carry.

Audio has no keyframes: a full audio queue drops its oldest packet (a 20 ms gap the player
conceals).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from inference.frames import SAMPLE_RATE
from inference.threads import named_pool
from rtc.webrtc.encoding import MIN_BITRATE, AudioEncoder, VideoEncoder
from rtc.webrtc.fanout_receiver import Packer, Receiver

__all__ = [
    "FanoutSettings",
    "MediaFanout",
    "PacketTrack",
    "Receiver",
    "VideoGroup",
    "encode_pool",
]

log = logging.getLogger(__name__)

VIDEO_QUEUE_PACKETS = 12
"""Video packets (480 ms) a receiver may lag before it drops to the next keyframe."""
AUDIO_QUEUE_PACKETS = 25
"""Audio packets (500 ms) a receiver may lag before its oldest ones are dropped. Larger than
the video's because gaps in sound are heard; a dropped packet leaves a gap in the timestamps
(each packet keeps its slot's time), which the player conceals."""
KEYFRAME_GAP = 0.5
"""Seconds between two forced keyframes of one stream at least (``--keyframe-gap``)."""


_encode_pool: ThreadPoolExecutor | None = None


def encode_pool() -> ThreadPoolExecutor:
    """The threads every stream's video encoders run on: one per core (libx264 and libvpx
    release the GIL and each encoder is single-threaded, so more threads would only queue),
    and apart from the default executor, so that TTS, file decoding and avatar work never
    wait behind encodes or make them late. The batcher's thread never encodes."""
    global _encode_pool
    if _encode_pool is None:
        _encode_pool = named_pool("encode", os.cpu_count() or 1)
    return _encode_pool


@dataclass(frozen=True)
class FanoutSettings:
    """How a stream's shared encoders behave (from the realtime section of the config)."""

    video_bitrate: int = 1_000_000
    """The ceiling: receiver estimates only lower it."""
    min_video_bitrate: int = MIN_BITRATE
    """The floor: a receiver estimating less is reported, not followed."""
    keyframe_gap: float = KEYFRAME_GAP
    h264_encoder: str = "libx264"
    """x264, h264_nvenc or auto (rtc/webrtc/h264_encoders.py)."""


class VideoGroup:
    """One codec's shared encoder and the receivers of its packets."""

    def __init__(
        self, mime_type: str, settings: FanoutSettings, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.mime_type = mime_type
        self.settings = settings
        self.encoder = VideoEncoder(
            mime_type,
            settings.video_bitrate,
            floor=settings.min_video_bitrate,
            h264_encoder=settings.h264_encoder,
        )
        self.receivers: list[Receiver] = []
        self.packer = Packer(mime_type)
        self._now = now
        self._wanted = False
        self._last_forced = -float("inf")
        self.keyframe_requests = 0
        self.forced_keyframes = 0
        """Keyframes forced on request (the encoder's own periodic ones are not counted)."""
        self.packets = 0

    def request_keyframe(self) -> None:
        """A receiver wants a keyframe: the next frame is one unless one was forced less than
        ``keyframe_gap`` ago, in which case the first frame after the gap is."""
        self.keyframe_requests += 1
        self._wanted = True

    def next_frame_options(self) -> bool:
        """Settle, on the loop, what the next encode does: follow the receivers' lowest
        estimate and decide whether it is a forced keyframe. Returns that decision."""
        estimates = []
        for receiver in self.receivers:
            estimate = receiver.estimate()
            receiver.below_floor = estimate is not None and estimate < self.encoder.floor
            if estimate is not None:
                estimates.append(estimate)
        if estimates:
            self.encoder.follow_estimate(min(estimates))
        now = self._now()
        if self._wanted and now - self._last_forced >= self.settings.keyframe_gap:
            self._wanted = False
            self._last_forced = now
            self.forced_keyframes += 1
            return True
        return False

    def publish(self, packet: av.Packet) -> None:
        """Give ``packet`` to every receiver (each one's own queue decides)."""
        self.packets += 1
        packed = self.packer.pack(packet)
        for receiver in self.receivers:
            receiver.offer(packed)

    def describe(self) -> dict[str, object]:
        """State for the API."""
        return {
            "codec": self.mime_type,
            "bitrate": self.encoder.bitrate,
            "receivers": len(self.receivers),
            "keyframe_requests": self.keyframe_requests,
            "forced_keyframes": self.forced_keyframes,
        }


class MediaFanout:
    """A stream's encoders: released frames in, the same packets to every receiver out.

    Two pump tasks pull the session's clock-paced tracks (:meth:`start`); frames are encoded
    only for codecs someone receives, Opus only while an audio receiver exists.
    """

    def __init__(
        self,
        video: MediaStreamTrack,
        audio: MediaStreamTrack,
        settings: FanoutSettings,
        name: str = "",
    ) -> None:
        self.video = video
        self.audio = audio
        self.settings = settings
        self.name = name
        self.groups: dict[str, VideoGroup] = {}
        self.audio_receivers: list[Receiver] = []
        self._audio_encoder: AudioEncoder | None = None
        self._audio_packer = Packer("audio/opus")
        self._tasks: list[asyncio.Task[None]] = []
        self.closed = False

    def video_receiver(self, mime_type: str, name: str) -> Receiver:
        """A new receiver of ``mime_type`` packets (its group's encoder made if needed)."""
        group = self.groups.get(mime_type)
        if group is None:
            group = self.groups[mime_type] = VideoGroup(mime_type, self.settings)
        receiver = Receiver(
            name, "video", VIDEO_QUEUE_PACKETS, group.request_keyframe, codec=mime_type
        )
        if self.closed:
            receiver.close()
        group.receivers.append(receiver)
        return receiver

    def audio_receiver(self, name: str) -> Receiver:
        """A new receiver of the stream's Opus packets."""
        receiver = Receiver(name, "audio", AUDIO_QUEUE_PACKETS, lambda: None)
        if self.closed:
            receiver.close()
        self.audio_receivers.append(receiver)
        return receiver

    def remove(self, receiver: Receiver) -> None:
        """Forget ``receiver``; a codec nobody receives any more frees its encoder."""
        receiver.close()
        if receiver in self.audio_receivers:
            self.audio_receivers.remove(receiver)
        for mime_type, group in list(self.groups.items()):
            if receiver in group.receivers:
                group.receivers.remove(receiver)
                if not group.receivers:
                    group.encoder.close()
                    del self.groups[mime_type]

    def receivers(self) -> list[Receiver]:
        """Every receiver, video first."""
        return [r for g in self.groups.values() for r in g.receivers] + self.audio_receivers

    def start(self) -> None:
        """Start pulling the tracks (idempotent)."""
        if not self._tasks and not self.closed:
            self._tasks = [
                asyncio.create_task(self._pump_video(), name=f"fanout-video-{self.name}"),
                asyncio.create_task(self._pump_audio(), name=f"fanout-audio-{self.name}"),
            ]

    async def close(self) -> None:
        """Stop the pumps, end every receiver and free the encoders (idempotent)."""
        self.closed = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for receiver in self.receivers():
            receiver.close()
        for group in self.groups.values():
            group.encoder.close()
        if self._audio_encoder is not None:
            self._audio_encoder.close()
            self._audio_encoder = None

    async def _pump_video(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await self.video.recv()
                if not isinstance(frame, av.VideoFrame):
                    raise TypeError(f"{type(self.video).__name__} gave {type(frame).__name__}")
                groups = [g for g in self.groups.values() if g.receivers]
                if not groups:
                    continue  # released all the same: the clock goes on without receivers
                keyframes = [g.next_frame_options() for g in groups]
                # libx264/libvpx release the GIL: two codecs encode in parallel.
                packets = await asyncio.gather(
                    *(
                        loop.run_in_executor(encode_pool(), g.encoder.encode, frame, key)
                        for g, key in zip(groups, keyframes, strict=True)
                    )
                )
                for group, packet in zip(groups, packets, strict=True):
                    if self.groups.get(group.mime_type) is group:  # not freed meanwhile
                        group.publish(packet)

    async def _pump_audio(self) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await self.audio.recv()
                if not isinstance(frame, av.AudioFrame):
                    raise TypeError(f"{type(self.audio).__name__} gave {type(frame).__name__}")
                if not self.audio_receivers:
                    continue
                if self._audio_encoder is None:
                    self._audio_encoder = AudioEncoder(SAMPLE_RATE)
                # Inline (about 0.3 ms a packet): a hop to a worker thread costs the loop more.
                packet = self._audio_encoder.encode(frame)
                packet.is_keyframe = True
                packed = self._audio_packer.pack(packet)
                for receiver in self.audio_receivers:
                    receiver.offer(packed)

    def describe(self) -> dict[str, object]:
        """State for the API: codec groups and receivers."""
        return {
            "encoders": [g.describe() for g in self.groups.values()],
            "receivers": {r.name + "/" + r.kind: r.describe() for r in self.receivers()},
        }


class PacketTrack(MediaStreamTrack):
    """An aiortc track whose ``recv()`` returns a receiver's packets (sent without encoding).

    Added to the peer before the answer exists; :meth:`attach` gives it the receiver of the
    codec the answer chose (before the sender starts, which needs the connected peer).
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.receiver: Receiver | None = None
        self._on_stop: Callable[[Receiver], None] = lambda _: None

    def attach(self, receiver: Receiver, on_stop: Callable[[Receiver], None]) -> None:
        """Send ``receiver``'s packets; ``on_stop(receiver)`` once the track stops."""
        self.receiver, self._on_stop = receiver, on_stop

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self.receiver is None:
            raise RuntimeError("PacketTrack.recv before its codec was negotiated")
        packet = await self.receiver.get()
        if packet is None:
            self.stop()
            raise MediaStreamError
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            if self.receiver is not None:
                self._on_stop(self.receiver)
