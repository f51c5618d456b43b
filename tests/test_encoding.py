"""The stream's encoders (rtc/webrtc/encoding.py): what they emit decodes back to the input,
carries the input's own timestamps, and honours keyframe requests and receiver estimates
routed from an RTP sender."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from types import SimpleNamespace

import av
import cv2
import numpy as np
import pytest
from aiortc import RTCPeerConnection

from config import PROJECT_ROOT
from inference.frames import SAMPLE_RATE
from inference.mp4 import bgr_to_video_frame
from rtc.webrtc.encoding import (
    H264,
    MIN_BITRATE,
    VP8,
    AudioEncoder,
    VideoEncoder,
    answered_video_codec,
    follow_receiver_feedback,
)
from rtc.webrtc.fanout import FanoutSettings, Receiver, VideoGroup
from rtc.webrtc.h264_encoders import NVENC, X264, nvenc_problem, resolve_h264_encoder
from rtc.webrtc.tracks import VIDEO_TIME_BASE

DECODERS = {H264: "h264", VP8: "libvpx"}


def face_frames(count: int) -> list[av.VideoFrame]:
    """The astronaut with a mouth-sized dark ellipse opening and closing, stamped 1/25 s apart
    in 90 kHz units like the session's video track."""
    photo = cv2.imread(str(PROJECT_ROOT / "avatars" / "astronaut.jpg"))
    assert photo is not None
    image = cv2.resize(photo, (256, 256))
    frames = []
    for k in range(count):
        picture = image.copy()
        cv2.ellipse(picture, (128, 190), (20, 3 + 3 * (k % 5)), 0, 0, 360, (30, 20, 40), -1)
        frame = bgr_to_video_frame(picture)
        frame.pts = k * 3600
        frame.time_base = VIDEO_TIME_BASE
        frames.append(frame)
    return frames


def decode(mime_type: str, packets: list[av.Packet]) -> list[av.VideoFrame]:
    decoder = av.CodecContext.create(DECODERS[mime_type], "r")
    assert isinstance(decoder, av.VideoCodecContext)
    out: list[av.VideoFrame] = []
    for packet in packets:
        out.extend(
            f for f in decoder.decode(av.Packet(bytes(packet))) if isinstance(f, av.VideoFrame)
        )
    return out


def psnr(a: av.VideoFrame, b: av.VideoFrame) -> float:
    x = a.to_ndarray().astype(np.float64)
    y = b.to_ndarray().astype(np.float64)
    error = max(float(np.mean((x - y) ** 2)), 1e-9)
    return float(10 * np.log10(255.0**2 / error))


def h264_nal_types(data: bytes) -> set[int]:
    """NAL unit types of an Annex B stream."""
    types = set()
    start = data.find(b"\x00\x00\x01")
    while start >= 0:
        types.add(data[start + 3] & 0x1F)
        start = data.find(b"\x00\x00\x01", start + 3)
    return types


@pytest.mark.parametrize("mime_type", [H264, VP8])
def test_video_packets_decode_to_the_input_at_its_timestamps(mime_type: str) -> None:
    frames = face_frames(12)
    encoder = VideoEncoder(mime_type, bitrate=800_000)
    packets = [encoder.encode(f, keyframe=(k == 6)) for k, f in enumerate(frames)]
    # One packet per frame, none held back, each at its frame's own time.
    assert all(p.size > 0 for p in packets)
    assert [p.pts for p in packets] == [k * 3600 for k in range(12)]
    assert all(p.time_base == VIDEO_TIME_BASE for p in packets)
    # The frames are shared with viewers and recordings: encoding leaves them as they were.
    assert [f.pts for f in frames] == [k * 3600 for k in range(12)]
    assert all(f.time_base == VIDEO_TIME_BASE for f in frames)
    assert all(f.pict_type == av.video.frame.PictureType.NONE for f in frames)
    decoded = decode(mime_type, packets)
    assert len(decoded) == len(frames)
    quality = [psnr(a, b) for a, b in zip(frames, decoded, strict=True)]
    assert min(quality) > 30, quality


def test_h264_keyframes_come_first_and_on_request() -> None:
    frames = face_frames(6)
    encoder = VideoEncoder(H264, bitrate=800_000)
    packets = [encoder.encode(f, keyframe=(k == 4)) for k, f in enumerate(frames)]
    idr = [5 in h264_nal_types(bytes(p)) for p in packets]
    assert idr == [True, False, False, False, True, False]
    # Parameter sets travel with every keyframe, so a viewer can start from any of them.
    assert {7, 8} <= h264_nal_types(bytes(packets[4]))


def test_vp8_keyframe_on_request() -> None:
    frames = face_frames(6)
    encoder = VideoEncoder(VP8, bitrate=800_000)
    packets = [encoder.encode(f, keyframe=(k == 3)) for k, f in enumerate(frames)]
    # VP8's frame tag: bit 0 of the first byte is 0 for a key frame.
    assert [not (bytes(p)[0] & 1) for p in packets] == [True, False, False, True, False, False]


def test_unknown_codec_is_refused() -> None:
    with pytest.raises(ValueError, match="no encoder for video/VP9"):
        VideoEncoder("video/VP9", bitrate=500_000)


def test_audio_packets_keep_slot_times_across_a_gap() -> None:
    """A skipped slot stays a gap in the timestamps, so later sound is not pulled earlier."""
    encoder = AudioEncoder(SAMPLE_RATE)
    t = np.arange(320) / SAMPLE_RATE
    slots = [0, 1, 2, 5, 6]  # slots 3 and 4 were skipped
    packets = []
    for slot in slots:
        pcm = (0.3 * np.sin(2 * np.pi * 220 * (t + slot * 0.02)) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = slot * 320
        frame.time_base = Fraction(1, SAMPLE_RATE)
        packets.append(encoder.encode(frame))
    assert [p.pts for p in packets] == [s * 320 for s in slots]
    assert all(p.size > 0 for p in packets)
    decoder = av.CodecContext.create("libopus", "r")
    assert isinstance(decoder, av.AudioCodecContext)
    decoded = [f for p in packets for f in decoder.decode(av.Packet(bytes(p)))]
    pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in decoded]).astype(np.float64)
    assert np.sqrt(np.mean(pcm[len(pcm) // 2 :] ** 2)) > 0.1 * 32767  # the tone came through


class FakeSender:
    """Stands in for aiortc's RTCRtpSender: its keyframe entry point and the packing encoder
    whose ``target_bitrate`` REMB sets (created with the sender's first frame)."""

    def __init__(self) -> None:
        self.requests = 0
        self._RTCRtpSender__encoder: SimpleNamespace | None = None

    def _send_keyframe(self) -> None:
        self.requests += 1


def group_receiver(group: VideoGroup) -> Receiver:
    """A receiver of ``group``'s packets, as a viewer's would be."""
    receiver = Receiver("r", "video", 8, group.request_keyframe, codec=group.mime_type)
    group.receivers.append(receiver)
    return receiver


def test_keyframe_requests_reach_the_shared_encoder() -> None:
    group = VideoGroup(H264, FanoutSettings(keyframe_gap=0.0))
    receiver = group_receiver(group)
    sender = FakeSender()
    follow_receiver_feedback(sender, receiver)  # type: ignore[arg-type]
    frames = face_frames(3)
    assert group.encoder.encode(frames[0], group.next_frame_options()).is_keyframe  # the first
    assert not group.encoder.encode(frames[1], group.next_frame_options()).is_keyframe
    sender._send_keyframe()  # what aiortc calls on an RTCP PLI/FIR
    assert sender.requests == 1 and receiver.keyframe_requests == 1
    packet = group.encoder.encode(frames[2], group.next_frame_options())
    assert packet.is_keyframe and 5 in h264_nal_types(bytes(packet))


async def test_answered_codec_needs_a_negotiated_codec() -> None:
    """Without an answer that chose H.264 or VP8 there is nothing to encode with."""
    pc = RTCPeerConnection()
    try:
        with pytest.raises(ValueError, match="no common video codec"):
            answered_video_codec(pc)
    finally:
        await pc.close()


def test_the_receiver_estimate_lowers_the_rate_within_bounds() -> None:
    frames = face_frames(5)
    encoder = VideoEncoder(H264, bitrate=1_000_000)
    encoder.encode(frames[0])
    encoder.follow_estimate(950_000)  # within 10 %: not worth a new encoder and keyframe
    assert encoder.bitrate == 1_000_000
    assert 5 not in h264_nal_types(bytes(encoder.encode(frames[1])))
    encoder.follow_estimate(300_000)  # congestion: down, re-opened, starting with a keyframe
    assert encoder.bitrate == 300_000
    assert 5 in h264_nal_types(bytes(encoder.encode(frames[2])))
    encoder.follow_estimate(5_000_000)  # the estimate never lifts it above the setting
    assert encoder.bitrate == 1_000_000
    encoder.follow_estimate(10)
    assert encoder.bitrate == MIN_BITRATE


def test_remb_reaches_the_shared_encoder_through_the_sender() -> None:
    group = VideoGroup(H264, FanoutSettings(video_bitrate=1_000_000))
    receiver = group_receiver(group)
    sender = FakeSender()
    follow_receiver_feedback(sender, receiver)  # type: ignore[arg-type]
    group.next_frame_options()  # aiortc makes its packing encoder after the first frame
    sender._RTCRtpSender__encoder = SimpleNamespace(target_bitrate=1_000_000)  # its default
    group.next_frame_options()
    assert group.encoder.bitrate == 1_000_000
    sender._RTCRtpSender__encoder.target_bitrate = 400_000  # a REMB arrived
    group.next_frame_options()
    assert group.encoder.bitrate == 400_000
    sender._RTCRtpSender__encoder.target_bitrate = 1_500_000  # the link recovered
    group.next_frame_options()
    assert group.encoder.bitrate == 1_000_000


def test_the_h264_encoder_choice() -> None:
    assert resolve_h264_encoder(X264) == X264
    with pytest.raises(ValueError, match=r"unknown H\.264 encoder 'x265'"):
        resolve_h264_encoder("x265")
    works = nvenc_problem() is None
    assert resolve_h264_encoder("auto") == (NVENC if works else X264)
    if works:
        assert resolve_h264_encoder(NVENC) == NVENC
    else:  # this machine: the reason is FFmpeg's, and the way out is named
        with pytest.raises(ValueError, match=r"cannot encode on this machine .*libx264 or auto"):
            resolve_h264_encoder(NVENC)
    # auto falls back to what runs: H.264 from it decodes here either way
    encoder = VideoEncoder(H264, bitrate=800_000, h264_encoder="auto")
    packets = [encoder.encode(f) for f in face_frames(3)]
    decoder = av.CodecContext.create("h264", "r")
    assert sum(len(decoder.decode(av.Packet(bytes(p)))) for p in packets) == 3


@pytest.mark.skipif(nvenc_problem() is not None, reason="NVENC cannot encode here")
def test_nvenc_keyframes_on_request_and_decodes() -> None:
    frames = face_frames(6)
    encoder = VideoEncoder(H264, bitrate=800_000, h264_encoder=NVENC)
    packets = [encoder.encode(f, keyframe=(k == 4)) for k, f in enumerate(frames)]
    assert [5 in h264_nal_types(bytes(p)) for p in packets] == [
        True, False, False, False, True, False
    ]  # fmt: skip
    decoder = av.CodecContext.create("h264", "r")
    assert sum(len(decoder.decode(av.Packet(bytes(p)))) for p in packets) == 6


def test_serve_refuses_an_h264_encoder_that_cannot_run(tmp_path) -> None:
    if nvenc_problem() is None:
        pytest.skip("NVENC encodes here")
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "server.py"), "serve", "--h264-encoder", NVENC],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "--h264-encoder h264_nvenc cannot encode on this machine" in result.stderr
    assert "Traceback" not in result.stderr
