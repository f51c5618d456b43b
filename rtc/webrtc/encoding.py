"""The stream encodes its own media (once, for every receiver: rtc/webrtc/fanout.py); aiortc
only packetizes it.

aiortc's built-in encoders are tuned for a camera on a congested link: its VP8 runs libvpx
with a temporal denoiser and CBR padding (about 5 ms a 512x512 frame here) and its H.264 runs
libx264's default preset. An avatar is a still face with a moving mouth: the denoiser has no
noise to remove and padding only adds packets for the event loop to encrypt and send. Here
each stream encodes with settings made for that (libx264 ``ultrafast``/``zerolatency``, NVENC
where asked for (h264_encoders.py), or libvpx without the denoiser) in a worker thread, and
hands aiortc ``av.Packet``s, which its sender packs without encoding again (the path aiortc
provides for pre-encoded media).

Audio is encoded here too, for the clock's sake: aiortc's Opus encoder numbers its packets
by the samples it has encoded, so a slot the audio track skipped (the loop stalled) would
shift all later sound earlier against the video for the rest of the call. Here each packet
carries its own slot's time, and a skipped slot is a gap the receiver conceals.

What aiortc's sender learns from the receiver still reaches the encoder: keyframe requests
(PLI/FIR from a receiver that lost packets) and the receiver's bandwidth estimate (REMB),
which lowers the bitrate below the configured ceiling (``--video-bitrate``) on a congested
link and lets it rise back to it; see :func:`follow_receiver_feedback` (and the fan-out for
how many receivers' requests and estimates are combined).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from fractions import Fraction
from typing import Protocol

import av
from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import SessionDescription

from inference.mp4 import clone_video_frame
from rtc.webrtc.h264_encoders import X264, open_h264, resolve_h264_encoder

log = logging.getLogger(__name__)

H264 = "video/H264"
VP8 = "video/VP8"
ENCODED_CODECS = (H264, VP8)
"""Codecs the session encodes itself, in the order it prefers them."""
KEYFRAME_SECONDS = 10
"""A keyframe at least this often, so a viewer whose keyframe request was lost recovers."""
MIN_BITRATE = 100_000
"""The encoder never goes below this, whatever the receiver estimates (a face needs it)."""
RATE_STEP = 0.1
"""Relative change of the receiver's estimate that re-opens the encoder at the new rate (a
keyframe follows); smaller changes are ignored, as aiortc's own encoders do."""


class FeedbackTarget(Protocol):
    """What receiver feedback reaches: a keyframe request, a bandwidth estimate to read."""

    estimate: Callable[[], int | None]

    def request_keyframe(self) -> None: ...


class VideoEncoder:
    """One stream's encoder: yuv420p frames in, one ``av.Packet`` per frame out."""

    def __init__(
        self,
        mime_type: str,
        bitrate: int,
        fps: int = 25,
        floor: int = MIN_BITRATE,
        h264_encoder: str = X264,
    ) -> None:
        if mime_type not in ENCODED_CODECS:
            raise ValueError(f"no encoder for {mime_type}; expected one of {ENCODED_CODECS}")
        self.mime_type = mime_type
        self.h264_encoder = resolve_h264_encoder(h264_encoder)
        """x264 or NVENC (``--h264-encoder``, rtc/webrtc/h264_encoders.py); H.264 only."""
        self.ceiling = bitrate
        """The configured rate; the receivers' estimates only ever lower it."""
        self.floor = min(floor, bitrate)
        """The rate it never goes below, whatever a receiver estimates."""
        self.bitrate = bitrate
        self.fps = fps
        self._codec: av.VideoCodecContext | None = None

    def _open(self, width: int, height: int) -> av.VideoCodecContext:
        if self.mime_type == H264:
            codec = open_h264(self.h264_encoder, self.bitrate)
        else:
            codec = av.CodecContext.create("libvpx", "w")
            codec.qmin, codec.qmax = 2, 56
            # aiortc's real-time settings without the denoiser and two speed steps faster:
            # 2.9 against 5.3 ms per 512x512 frame on this CPU.
            codec.options = {
                "deadline": "realtime",
                "cpu-used": "-8",
                "lag-in-frames": "0",
                "static-thresh": "1",
                "partitions": "0",
                "undershoot-pct": "100",
                "overshoot-pct": "15",
                "maxrate": str(self.bitrate),
                "bufsize": str(self.bitrate),
            }
        codec.width, codec.height = width, height
        codec.pix_fmt = "yuv420p"
        codec.bit_rate = self.bitrate
        codec.framerate = Fraction(self.fps, 1)
        codec.time_base = Fraction(1, self.fps)
        codec.gop_size = KEYFRAME_SECONDS * self.fps
        codec.thread_count = 1  # sessions run in parallel; one thread each wastes least
        return codec

    def close(self) -> None:
        """Free the codec now (its native threads and buffers), not when a garbage
        collection happens to find the session; a later encode would open a new one."""
        self._codec = None

    def follow_estimate(self, estimate: int) -> None:
        """Adopt a receiver's bandwidth estimate (bits/s), within [floor, ceiling]."""
        target = max(self.floor, min(self.ceiling, estimate))
        if abs(target - self.bitrate) > RATE_STEP * self.bitrate:
            log.info(
                "video bitrate %d -> %d bit/s (receiver estimate %d)",
                self.bitrate,
                target,
                estimate,
            )
            self.bitrate = target
            self._codec = None  # re-opened at the new rate by the next encode, as a keyframe

    def encode(self, frame: av.VideoFrame, keyframe: bool = False) -> av.Packet:
        """Encode ``frame``; the packet keeps its pts and time base (empty if the encoder
        held the frame back, which these settings never do)."""
        codec = self._codec
        if codec is None or (codec.width, codec.height) != (frame.width, frame.height):
            codec = self._codec = self._open(frame.width, frame.height)
            keyframe = True
        pts, time_base = frame.pts, frame.time_base
        # The frame is shared with viewers and recordings; the encoder rescales the pts of
        # the frame it gets (it counts in frames) and reads its picture type: a copy.
        own = clone_video_frame(frame)
        own.pict_type = (
            av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        )
        out = codec.encode(own)
        packet = _stamped(b"".join(bytes(p) for p in out), pts, time_base)
        packet.is_keyframe = any(p.is_keyframe for p in out)
        return packet


class AudioEncoder:
    """Opus for one stream: 20 ms s16 mono frames in, one packet each out, at their pts."""

    def __init__(self, sample_rate: int, bitrate: int = 32_000) -> None:
        codec = av.CodecContext.create("libopus", "w")
        # Opus takes 16 kHz mono directly (the RTP clock stays 48 kHz; aiortc converts the
        # pts): no resampling to 48 kHz stereo as aiortc's encoder does.
        codec.sample_rate = sample_rate
        codec.layout = "mono"
        codec.format = "s16"
        codec.bit_rate = bitrate
        codec.time_base = Fraction(1, sample_rate)
        codec.options = {"application": "voip"}
        self._codec: av.AudioCodecContext | None = codec

    def encode(self, frame: av.AudioFrame) -> av.Packet:
        """The frame's packet, stamped with the frame's own pts (see the module docstring)."""
        codec = self._codec
        if codec is None:
            raise MediaStreamError("the audio encoder was closed")
        data = b"".join(bytes(p) for p in codec.encode(frame))
        return _stamped(data, frame.pts, frame.time_base)

    def close(self) -> None:
        """Free the codec now. PyAV re-frames audio for Opus through an FFmpeg filter graph
        that starts one worker thread per CPU; left to the garbage collector (a session is
        kept alive by reference cycles until a full collection), a reconnect storm piled
        up hundreds of them."""
        self._codec = None


def _stamped(data: bytes, pts: int | None, time_base: Fraction | None) -> av.Packet:
    """A packet of ``data`` at the frame's own time (the tracks stamp every frame)."""
    if pts is None or time_base is None:
        raise ValueError("frames must carry pts and time_base to be sent")
    packet = av.Packet(data)
    packet.pts = pts
    packet.time_base = time_base
    return packet


def follow_receiver_feedback(sender: RTCRtpSender, receiver: FeedbackTarget) -> None:
    """Route what ``sender`` hears from its receiver to ``receiver`` (its fan-out queue).

    aiortc applies it only to frames it encodes itself; for the packets it packs it would be
    lost: a viewer that lost a packet would stay frozen until the next periodic keyframe, and
    a congested link would keep getting the full rate. Both hooks are aiortc 1.x internals
    (pinned ``<2``; tests/test_encoding.py checks them on a real sender): ``_send_keyframe``
    is the sender's one entry point for PLI/FIR, and REMB sets ``target_bitrate`` on the
    sender's (here packing-only) encoder object.
    """
    original = sender._send_keyframe

    def send_keyframe() -> None:
        receiver.request_keyframe()
        original()

    sender._send_keyframe = send_keyframe  # type: ignore[method-assign]

    default: list[int] = []  # the packer's own starting rate, before any REMB changed it
    changed = False

    def estimate() -> int | None:
        nonlocal changed
        rate = getattr(getattr(sender, "_RTCRtpSender__encoder", None), "target_bitrate", None)
        if not isinstance(rate, int):
            return None
        if not default:
            default.append(rate)
        changed = changed or rate != default[0]
        return rate if changed else None

    receiver.estimate = estimate


def video_codec_of(sdp: str) -> str | None:
    """The mime type of an SDP's first video codec; None without video."""
    for media in SessionDescription.parse(sdp).media:
        if media.kind == "video" and media.rtp.codecs:
            return str(media.rtp.codecs[0].mimeType)
    return None


def negotiated_video_codec(pc: RTCPeerConnection) -> str | None:
    """The mime type the local description sends video with (its first video codec)."""
    local = pc.localDescription
    return None if local is None else video_codec_of(local.sdp)


def answered_video_codec(pc: RTCPeerConnection) -> str:
    """The mime type ``pc``'s local answer sends video with; ValueError when it is none the
    server encodes (aiortc itself sends only H.264 and VP8, so this means the offer had no
    usable video codec)."""
    codec = negotiated_video_codec(pc)
    if codec not in ENCODED_CODECS:
        raise ValueError(f"no common video codec: the server sends {ENCODED_CODECS}")
    return codec
