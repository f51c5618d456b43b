"""One receiver of a stream's shared packets (rtc/webrtc/fanout.py): a bounded queue, and the
packets' RTP payloads, cut once per stream for every receiver.

Cutting a frame into RTP payloads (aiortc's packers: VP8 descriptors, H.264 FU-A/STAP-A) is
the same work for every receiver of a codec, so the codec group does it once when it
publishes a packet; each receiver's sender then only adds its own RTP header and encrypts
(rtc/webrtc/packet_sender.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import av
from aiortc.codecs import get_encoder
from aiortc.codecs.base import Encoder
from aiortc.mediastreams import convert_timebase
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

log = logging.getLogger(__name__)

SLOTS_PER_SECOND = {"video": 25, "audio": 50}
VIDEO_CLOCK = 90_000
AUDIO_TIME_BASE = Fraction(1, 48_000)
"""RTP clocks: 90 kHz for video, 48 kHz for Opus whatever its sampling rate (RFC 7587)."""


@dataclass(frozen=True)
class Packed:
    """An encoded packet with its RTP payloads, shared by every receiver of its codec."""

    packet: av.Packet
    payloads: list[bytes]
    """The packet cut to fit RTP packets, in order (the last one carries the marker)."""
    timestamp: int
    """RTP time of the packet, from the stream's time zero (a sender adds its random origin)."""


class Backlogged(Exception):
    """A pushed-to receiver's sender cannot take this packet now (its socket is backed up)."""


class Packer:
    """Cuts one codec's packets into RTP payloads (aiortc's own packetizer, used once per
    stream instead of once per receiver)."""

    def __init__(self, mime_type: str) -> None:
        self.mime_type = mime_type
        self._video: Encoder | None = None
        if mime_type.startswith("video/"):
            codec = RTCRtpCodecParameters(mimeType=mime_type, clockRate=VIDEO_CLOCK)
            self._video = get_encoder(codec)

    def pack(self, packet: av.Packet) -> Packed:
        """``packet`` with its payloads and RTP timestamp."""
        if packet.pts is None or packet.time_base is None:
            raise ValueError("packets must carry pts and time_base to be sent")
        if self._video is not None:
            payloads, timestamp = self._video.pack(packet)
            return Packed(packet, payloads, timestamp)
        # Opus: one payload per packet, as aiortc's OpusEncoder.pack does.
        timestamp = convert_timebase(packet.pts, packet.time_base, AUDIO_TIME_BASE)
        return Packed(packet, [bytes(packet)], timestamp)


class Receiver:
    """One receiver's packets: a bounded queue, filled only once the receiver pulls; or,
    for a sender that sends at once (:meth:`push_to`), no queue at all."""

    def __init__(
        self,
        name: str,
        kind: str,
        capacity: int,
        on_keyframe: Callable[[], None],
        codec: str | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.codec = codec
        """The video codec's mime type (None for audio)."""
        self.capacity = capacity
        self._on_keyframe = on_keyframe
        self._queue: deque[Packed] = deque()
        self._ready = asyncio.Event()
        self._sink: Callable[[Packed], None] | None = None
        self.active = False
        """Set by the first :meth:`get`: packets are queued only once the sender pulls, so a
        peer still connecting does not get a burst of stale packets."""
        self.waiting_for_keyframe = kind == "video"
        """A video receiver starts, and restarts after an overflow, at a keyframe."""
        self.closed = False
        self.sent = 0
        self.dropped = 0
        """Packets this receiver never got because it lagged (whole GOPs, for video)."""
        self.keyframe_requests = 0
        """Keyframes this receiver asked for (its start, PLI/FIR, overflows)."""
        self.estimate: Callable[[], int | None] = lambda: None
        """Its receiver's bandwidth estimate, if it reports one (see follow_receiver_feedback)."""
        self.below_floor = False
        """Its estimate is below the stream's floor: it gets more than it says it can carry."""
        self.first_slot: int | None = None
        """Session clock slot (video 1/25 s, audio 20 ms) of the first packet it got: maps a
        receiver's RTP time, counted from its first packet, back to the session clock."""

    @property
    def depth(self) -> int:
        """Packets waiting (not ``__len__``: an empty receiver must still be truthy)."""
        return len(self._queue)

    def request_keyframe(self) -> None:
        """Ask the codec group for a keyframe (coalesced with everybody else's)."""
        self.keyframe_requests += 1
        self._on_keyframe()

    def offer(self, packed: Packed) -> None:
        """Queue ``packed`` (called by the group for every packet it encodes)."""
        if self.closed or not self.active:
            return
        if self.waiting_for_keyframe:
            if not packed.packet.is_keyframe:
                self.dropped += 1
                return
            self.waiting_for_keyframe = False
        if self._sink is not None:
            self._push(self._sink, packed)
            return
        if len(self._queue) >= self.capacity:
            if self.kind == "audio":
                self._queue.popleft()
                self.dropped += 1
            else:  # never a partial GOP: drop what is queued, restart at a keyframe
                self.dropped += len(self._queue) + 1
                self._queue.clear()
                self.waiting_for_keyframe = True
                self.request_keyframe()
                return
        self._queue.append(packed)
        self._ready.set()

    async def get(self) -> av.Packet | None:
        """The next packet, or None once the receiver or its stream ended."""
        packed = await self.get_packed()
        return None if packed is None else packed.packet

    async def get_packed(self) -> Packed | None:
        """The next packet with its RTP payloads, or None once the receiver or its stream
        ended."""
        self._start()
        while not self._queue:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        packed = self._queue.popleft()
        self._took(packed)
        return packed

    def push_to(self, sink: Callable[[Packed], None]) -> None:
        """From now on hand every packet to ``sink`` the moment it is published, in the
        publisher's call (rtc/webrtc/packet_sender.py: sending a packet is a few
        microseconds of work that never waits, so a queue and a task wake-up per packet and
        receiver would cost more than the sending). Starts the receiver as a first
        :meth:`get` does. A sink that raises ends the receiver."""
        self._sink = sink
        self._start()

    async def wait_closed(self) -> None:
        """Return once the receiver ended (what a pushing sender waits on)."""
        while not self.closed:
            self._ready.clear()
            await self._ready.wait()

    def _start(self) -> None:
        if not self.active:
            self.active = True
            if self.kind == "video":
                self.request_keyframe()  # a joiner decodes from its first packet

    def _took(self, packed: Packed) -> None:
        self.sent += 1
        packet = packed.packet
        if self.first_slot is None and packet.pts is not None and packet.time_base is not None:
            self.first_slot = round(packet.pts * packet.time_base * SLOTS_PER_SECOND[self.kind])

    def _push(self, sink: Callable[[Packed], None], packed: Packed) -> None:
        try:
            sink(packed)
        except Backlogged:  # as a full queue: skip to the next keyframe, never a partial GOP
            self.dropped += 1
            if self.kind == "video":
                self.waiting_for_keyframe = True
                self.request_keyframe()
            return
        except ConnectionError:  # its peer went away: the sender's loop ends the track
            self.close()
            return
        except Exception:
            log.warning("sending to %s failed; ending it", self.name, exc_info=True)
            self.close()
            return
        self._took(packed)

    def close(self) -> None:
        """End the receiver: :meth:`get` returns None once the queued packets are gone."""
        self.closed = True
        self._ready.set()

    def describe(self) -> dict[str, object]:
        """Counters for the API and /metrics."""
        return {
            "sent": self.sent,
            "dropped": self.dropped,
            "keyframe_requests": self.keyframe_requests,
            "below_floor": self.below_floor,
        }
