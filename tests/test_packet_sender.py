"""The viewers' RTP sender (rtc/webrtc/packet_sender.py) against real aiortc peers on loopback.

It replaces aiortc's own sender loop, so everything aiortc does with a sender's packets must
still hold: the receiver decodes them, headers are numbered and marked as aiortc's loop would,
NACKs are answered from its history (through RTX), sender reports count what left, REMB
estimates reach the shared encoder, and closing the peer ends the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import av
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RtcpPsfbPacket,
    RtpPacket,
    pack_remb_fci,
    unwrap_rtx,
)

from rtc.webrtc import packet_sender
from rtc.webrtc.encoding import VP8, follow_receiver_feedback
from rtc.webrtc.fanout import FanoutSettings, PacketTrack, Receiver, VideoGroup
from rtc.webrtc.fanout_receiver import Packed
from rtc.webrtc.packet_sender import (
    MAX_BACKLOG_BYTES,
    direct_wire,
    run_now,
    send_attached_packets,
)
from tests.test_encoding import face_frames

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("loopback_ice")]

FRAMES = 12


@dataclass
class Link:
    group: VideoGroup
    receiver: Receiver
    sender: RTCRtpSender
    server: RTCPeerConnection
    client: RTCPeerConnection
    sent: list[bytes] = field(default_factory=list)
    """Plain RTP as the sender handed it to DTLS (before SRTP)."""
    decoded: list[av.VideoFrame] = field(default_factory=list)


class SrtpSpy:
    """The sending SRTP session, keeping what it is asked to encrypt (plain RTP)."""

    def __init__(self, session: Any, sent: list[bytes]) -> None:
        self.session, self.sent = session, sent

    def protect(self, data: bytes) -> bytes:
        self.sent.append(data)
        return bytes(self.session.protect(data))

    def protect_rtcp(self, data: bytes) -> bytes:
        return bytes(self.session.protect_rtcp(data))


@contextlib.asynccontextmanager
async def link() -> AsyncIterator[Link]:
    """A server peer sending one VP8 receiver's packets to a client peer that decodes them."""
    group = VideoGroup(VP8, FanoutSettings(keyframe_gap=0.0))
    receiver = Receiver("viewer", "video", 8, group.request_keyframe, codec=VP8)
    group.receivers.append(receiver)
    server, client = RTCPeerConnection(), RTCPeerConnection()
    track = PacketTrack("video")
    transceiver = server.addTransceiver(track, direction="sendonly")
    client.addTransceiver("video", direction="recvonly")
    got_track: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    @client.on("track")
    def on_track(remote: object) -> None:
        if not got_track.done():
            got_track.set_result(remote)

    await client.setLocalDescription(await client.createOffer())
    await server.setRemoteDescription(client.localDescription)
    await server.setLocalDescription(await server.createAnswer())
    track.attach(receiver, lambda r: r.close())
    send_attached_packets(server)
    r = Link(group, receiver, transceiver.sender, server, client)
    await client.setRemoteDescription(server.localDescription)
    remote = await asyncio.wait_for(got_track, 10)

    async def decode() -> None:
        with contextlib.suppress(Exception):
            while True:
                r.decoded.append(await remote.recv())  # type: ignore[attr-defined]

    decoder = asyncio.create_task(decode())
    for _ in range(100):  # the sender pushes once aiortc started it (peer connected)
        if receiver.active:
            break
        await asyncio.sleep(0.05)
    assert receiver.active, "the sender never started"
    dtls = transceiver.sender.transport
    dtls._tx_srtp = SrtpSpy(dtls._tx_srtp, r.sent)  # type: ignore[assignment]
    try:
        yield r
    finally:
        decoder.cancel()
        await server.close()
        await client.close()


async def stream(r: Link, count: int = FRAMES) -> list[Packed]:
    """Encode and publish ``count`` frames at 25 fps; the packs every receiver got."""
    packs: list[Packed] = []
    pack = r.group.packer.pack

    def recorded(packet: av.Packet) -> Packed:
        packs.append(pack(packet))
        return packs[-1]

    r.group.packer.pack = recorded  # type: ignore[method-assign]
    for frame in face_frames(count):
        r.group.publish(r.group.encoder.encode(frame, r.group.next_frame_options()))
        await asyncio.sleep(0.04)
    await asyncio.sleep(0.3)  # the last frames decode
    return packs


def parsed(r: Link) -> list[RtpPacket]:
    return [RtpPacket.parse(data) for data in r.sent]


async def test_the_receiver_decodes_every_frame_and_headers_are_numbered_and_marked() -> None:
    async with link() as r:
        packs = await stream(r)
        packets = parsed(r)
        assert len(r.decoded) >= FRAMES - 1  # the player decodes what it got
        assert [p.payload for p in packets] == [q for pack in packs for q in pack.payloads]
        sequence = [p.sequence_number for p in packets]
        assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(sequence))
        markers = [i for i, p in enumerate(packets) if p.marker]
        ends = list(itertools.accumulate(len(pack.payloads) for pack in packs))
        assert markers == [e - 1 for e in ends]  # the last payload of each frame, only
        stamps = sorted({p.timestamp for p in packets})
        assert len(stamps) == FRAMES and {b - a for a, b in itertools.pairwise(stamps)} == {3600}
        assert {p.ssrc for p in packets} == {r.sender._ssrc}
        # Byte for byte what aiortc's own loop would have sent (header extensions included).
        extensions = r.sender._RTCRtpSender__rtp_header_extensions_map  # type: ignore[attr-defined]
        mid = r.server.getTransceivers()[0].mid
        sends = []
        for data in r.sent:
            packet = RtpPacket.parse(data, extensions)
            assert packet.extensions.mid == mid and packet.extensions.abs_send_time is not None
            sends.append(packet.extensions.abs_send_time)
            own = RtpPacket(
                payload_type=packet.payload_type,
                marker=packet.marker,
                sequence_number=packet.sequence_number,
                timestamp=packet.timestamp,
                ssrc=packet.ssrc,
                payload=packet.payload,
            )
            own.extensions.mid, own.extensions.abs_send_time = mid, sends[-1]
            assert own.serialize(extensions) == data
        assert len(set(sends)) > 1  # abs-send-time is stamped per frame, not once
        # They went the direct way, not through the fallback (aioice is as expected).
        assert direct_wire(r.sender.transport) is not None


async def test_a_nack_is_answered_with_the_same_packet_through_rtx() -> None:
    async with link() as r:
        await stream(r, 4)
        original = parsed(r)[2]
        r.sent.clear()
        await r.sender._retransmit(original.sequence_number)
        assert len(r.sent) == 1
        resent = RtpPacket.parse(r.sent[0])
        rtx_type = {c.payloadType for c in r.server.getTransceivers()[0]._codecs if c.name == "rtx"}
        assert resent.payload_type in rtx_type and resent.ssrc == r.sender._rtx_ssrc
        unwrapped = unwrap_rtx(resent, original.payload_type, original.ssrc)
        assert unwrapped.sequence_number == original.sequence_number
        assert unwrapped.payload == original.payload
        assert unwrapped.timestamp == original.timestamp


async def test_sender_reports_count_what_left_and_remb_reaches_the_encoder() -> None:
    async with link() as r:
        follow_receiver_feedback(r.sender, r.receiver)
        await stream(r, 6)
        stats = [s for s in (await r.sender.getStats()).values() if s.type == "outbound-rtp"]
        assert stats[0].packetsSent == len(r.sent)
        assert stats[0].bytesSent == sum(len(p.payload) for p in parsed(r))
        transport = [s for s in (await r.sender.getStats()).values() if s.type == "transport"]
        assert transport[0].packetsSent >= len(r.sent)  # the DTLS transport counted them too
        remb = RtcpPsfbPacket(
            fmt=RTCP_PSFB_APP, ssrc=0, media_ssrc=0, fci=pack_remb_fci(300_000, [r.sender._ssrc])
        )
        await r.sender._handle_rtcp_packet(remb)
        assert r.receiver.estimate() == 300_000


async def test_a_backed_up_socket_drops_frames_to_the_next_keyframe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """asyncio buffers what a full UDP socket did not take, without bound: past a bound the
    viewer skips to the next keyframe, as a pulling receiver with a full queue does."""
    async with link() as r:
        await stream(r, 3)
        frames = face_frames(3)
        monkeypatch.setattr(packet_sender, "backlog", lambda dtls: MAX_BACKLOG_BYTES + 1)
        count, requests = len(r.sent), r.receiver.keyframe_requests
        r.group.publish(r.group.encoder.encode(frames[0], False))
        assert len(r.sent) == count and r.receiver.dropped == 1
        assert r.receiver.waiting_for_keyframe and r.receiver.keyframe_requests == requests + 1
        monkeypatch.undo()  # the socket drains
        r.group.publish(r.group.encoder.encode(frames[1], False))
        assert len(r.sent) == count  # not a keyframe: still skipped
        r.group.publish(r.group.encoder.encode(frames[2], True))
        assert len(r.sent) > count and not r.receiver.waiting_for_keyframe
        assert not r.receiver.closed


async def test_closing_the_peer_ends_the_sender_and_its_receiver() -> None:
    async with link() as r:
        await stream(r, 2)
        await asyncio.wait_for(r.server.close(), 10)  # waits for the RTP loop to exit
        assert r.receiver.closed
        count = len(r.sent)
        r.group.publish(r.group.encoder.encode(face_frames(1)[0], True))
        assert len(r.sent) == count  # nothing is sent to a closed peer


def test_a_pushing_receiver_starts_at_a_keyframe_and_ends_when_its_sink_fails() -> None:
    group = VideoGroup(VP8, FanoutSettings(keyframe_gap=10.0))
    receiver = Receiver("viewer", "video", 8, group.request_keyframe, codec=VP8)
    group.receivers.append(receiver)
    got: list[Packed] = []
    receiver.push_to(got.append)
    assert receiver.keyframe_requests == 1  # a joiner asks for one at once
    frames = face_frames(4)
    group.encoder.encode(frames[0], True)  # the encoder's first keyframe, not published
    group.publish(group.encoder.encode(frames[1], False))
    assert got == [] and receiver.dropped == 1  # not a keyframe: the player could not decode
    group.publish(group.encoder.encode(frames[2], group.next_frame_options()))
    assert len(got) == 1 and got[0].packet.is_keyframe and receiver.sent == 1

    def gone(_: Packed) -> None:
        raise ConnectionError("the peer went away")

    receiver.push_to(gone)
    group.publish(group.encoder.encode(frames[3], False))
    assert receiver.closed


async def test_run_now_refuses_a_send_that_would_wait() -> None:
    async def waits() -> None:
        await asyncio.sleep(1)

    with pytest.raises(RuntimeError, match="suspended"):
        run_now(waits())
