"""The caller's microphone gets a one-packet jitter buffer (rtc/webrtc/receiving.py)."""

from __future__ import annotations

import logging

import pytest
from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from rtc.webrtc.receiving import MIC_PREFETCH, shorten_mic_buffer


def buffer_of(pc: RTCPeerConnection, kind: str) -> JitterBuffer:
    (transceiver,) = [t for t in pc.getTransceivers() if t.kind == kind]
    buffer = getattr(transceiver.receiver, "_RTCRtpReceiver__jitter_buffer")  # noqa: B009
    assert isinstance(buffer, JitterBuffer)
    return buffer


def packet(sequence: int) -> RtpPacket:
    out = RtpPacket(payload_type=111, sequence_number=sequence, timestamp=960 * sequence)
    out._data = b"x"  # type: ignore[attr-defined]  # what the receiver's depayloader sets
    return out


async def test_the_audio_receiver_releases_a_packet_when_the_next_one_arrives() -> None:
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        video = buffer_of(pc, "video")
        assert buffer_of(pc, "audio")._prefetch == 4  # aiortc's own: 80 ms
        assert shorten_mic_buffer(pc, "test")
        audio = buffer_of(pc, "audio")
        assert audio._prefetch == MIC_PREFETCH == 1 and audio.capacity == 16
        assert buffer_of(pc, "video") is video  # the picture's buffer is not touched
        # Packet n comes out when packet n + 1 is in (aiortc's took n + 4), one per packet.
        assert audio.add(packet(0))[1] is None
        for n in range(1, 6):
            frame = audio.add(packet(n))[1]
            assert frame is not None and frame.timestamp == 960 * (n - 1)
    finally:
        await pc.close()


async def test_a_buffer_in_use_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("audio", direction="recvonly")
        buffer_of(pc, "audio").add(packet(0))
        with caplog.at_level(logging.WARNING, logger="rtc.webrtc.receiving"):
            assert not shorten_mic_buffer(pc, "test")
        assert buffer_of(pc, "audio")._prefetch == 4
        assert "keeps aiortc's 80 ms prefetch" in caplog.text
    finally:
        await pc.close()
