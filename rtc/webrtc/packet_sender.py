"""A receiver's RTP sender that only stamps headers and encrypts: the per-viewer part of fan-out.

aiortc's sender loop (``RTCRtpSender._run_rtp``) is written for a track it encodes itself:
per frame a task wakes up, pulls the track and cuts the frame into payloads; per RTP packet
it builds an ``RtpPacket``, serialises its header extensions, reads the NTP clock twice and
awaits four coroutines down to ``sendto``. With one stream watched by many viewers that loop
ran once per viewer for the same packets, and it, not the encoder, was what each added
viewer cost (docs/benchmarks.md, fan-out).

:func:`send_packed` swaps that loop, on one sender, for :class:`PackedSender`. Its receiver
pushes (``Receiver.push_to``): when the codec group publishes a frame, every viewer's
:meth:`PackedSender.send_frame` runs in that same call, with the payloads the group cut once
(rtc/webrtc/fanout_receiver.py). Per frame it serialises one header with aiortc's own
serialiser (its negotiated header extensions: mid, abs-send-time) and per payload patches
only the marker bit and the sequence number into a copy; aiortc's SRTP-and-ICE send, which
never waits (UDP), is run to its end in place (:func:`run_now`). No queue and no task
wake-up per viewer and packet.

What the rest of aiortc reads from a sender is kept as its own loop keeps it: the counts and
times of RTCP sender reports; the packet history that NACKs retransmit from (filled lazily:
a packet is rebuilt only when a NACK asks for it, then aiortc's own ``_retransmit`` sends
it, RTX included); the encoder object REMB writes its estimate to; and the start/exit events
that ``stop()`` waits on. These are aiortc 1.x internals (pinned ``<2``);
tests/test_packet_sender.py runs the swapped loop against real aiortc peers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, NamedTuple

from aiortc import RTCPeerConnection, RTCRtpSender, clock
from aiortc.codecs import get_encoder
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import random_sequence_number
from aiortc.rtp import RTP_HISTORY_SIZE, RtpPacket
from aiortc.utils import random32, uint16_add, uint32_add

from rtc.webrtc.fanout import PacketTrack
from rtc.webrtc.fanout_receiver import Backlogged, Packed, Receiver

log = logging.getLogger(__name__)

_PRIVATE = "_RTCRtpSender__"
"""aiortc's sender keeps its state in name-mangled attributes; these are read and kept up."""
MAX_BACKLOG_BYTES = 256 * 1024
"""Unsent bytes (about 2 s at the default 1 Mbit/s) after which a viewer's frames are dropped
up to the next keyframe, as a pulling receiver whose queue is full is."""
_TX_BYTES, _TX_PACKETS = "_RTCDtlsTransport__tx_bytes", "_RTCDtlsTransport__tx_packets"


class _Sent(NamedTuple):
    """What a NACK needs to rebuild one sent packet."""

    sequence_number: int
    timestamp: int
    marker: int
    abs_send_time: int
    payload: bytes


class PackedSender:
    """The RTP loop of one sender whose track hands out :class:`Packed` frames."""

    def __init__(self, sender: RTCRtpSender, receiver: Receiver) -> None:
        self.sender = sender
        self.receiver = receiver
        self._sent: dict[int, _Sent] = {}
        self._payload_type = 0
        self._mid: str | None = None
        self._sequence_number = 0
        self._origin = 0
        self._template: tuple[bytes, int | None] | None = None

    def _get(self, name: str) -> Any:
        return getattr(self.sender, _PRIVATE + name)

    def _set(self, name: str, value: object) -> None:
        setattr(self.sender, _PRIVATE + name, value)

    async def run(self, codec: RTCRtpCodecParameters) -> None:
        """Replaces ``RTCRtpSender._run_rtp``: the same start, stop and error handling; the
        packets themselves are sent by :meth:`send_frame`, called by the fan-out."""
        self._get("rtp_started").set()
        self._payload_type = codec.payloadType or 0  # set by negotiation
        self._mid = self._get("mid")
        # REMB estimates are written to the sender's encoder object (follow_receiver_feedback
        # reads them there); this one is never asked to encode or pack.
        self._set("encoder", get_encoder(codec))
        self._sequence_number = random_sequence_number()
        self._origin = random32()
        try:
            self.receiver.push_to(self.send_frame)
            await self.receiver.wait_closed()
        except (asyncio.CancelledError, ConnectionError, MediaStreamError):
            pass
        finally:
            self.receiver.close()  # a stopped sender takes no more packets
            track = self.sender.track
            if track is not None:
                track.stop()
                self._set("track", None)
            self._set("encoder", None)
            self._get("rtp_exited").set()

    def send_frame(self, packed: Packed) -> None:
        """Send one frame's payloads now (in the fan-out's call, for every receiver in turn).

        The frame's header is aiortc's own serialisation (its header extensions as
        negotiated, see :meth:`_header`); each payload gets a copy with its own marker bit
        and sequence number.
        """
        if not self.sender._enabled:
            return
        if backlog(self.sender.transport) > MAX_BACKLOG_BYTES:
            raise Backlogged(f"{self.receiver.name}: its UDP socket is not taking packets")
        timestamp = uint32_add(self._origin, packed.timestamp)
        now = clock.current_ntp_time()
        abs_send_time = (now >> 14) & 0x00FFFFFF
        sequence_number = self._sequence_number
        header = self._header(sequence_number, timestamp, abs_send_time)
        send = _wire(self.sender.transport)
        last = len(packed.payloads) - 1
        octets = 0
        for i, payload in enumerate(packed.payloads):
            marker = 1 if i == last else 0
            header[1] = (marker << 7) | self._payload_type
            header[2] = sequence_number >> 8
            header[3] = sequence_number & 0xFF
            self._sent[sequence_number % RTP_HISTORY_SIZE] = _Sent(
                sequence_number, timestamp, marker, abs_send_time, payload
            )
            send(bytes(header) + payload)
            octets += len(payload)
            sequence_number = uint16_add(sequence_number, 1)
        self._sequence_number = sequence_number
        # What the RTCP sender reports read (aiortc's loop keeps them per packet).
        self._set("ntp_timestamp", now)
        self._set("rtp_timestamp", timestamp)
        self._set("octet_count", self._get("octet_count") + octets)
        self._set("packet_count", self._get("packet_count") + len(packed.payloads))

    def _header(self, sequence_number: int, timestamp: int, abs_send_time: int) -> bytearray:
        """The frame's RTP header, as aiortc serialises it: made once per sender and patched
        per frame (timestamp, abs-send-time) where the extensions allow (see _template)."""
        if self._template is None:
            self._template = self._make_template()
        template, abs_at = self._template
        if not template:  # the extensions move with their values: serialise every frame
            packet = self._packet(sequence_number, timestamp, 0, abs_send_time, b"")
            return bytearray(packet.serialize(self._get("rtp_header_extensions_map")))
        header = bytearray(template)
        header[4:8] = timestamp.to_bytes(4, "big")
        if abs_at is not None:
            header[abs_at : abs_at + 3] = abs_send_time.to_bytes(3, "big")
        return header

    def _make_template(self) -> tuple[bytes, int | None]:
        """A header serialised by aiortc, and where its 3-byte abs-send-time sits: found by
        serialising two headers that differ only in that value. No difference: not
        negotiated (None). Anything but three adjacent bytes: no template (b"")."""
        extensions = self._get("rtp_header_extensions_map")
        low = self._packet(0, 0, 0, 0, b"").serialize(extensions)
        high = self._packet(0, 0, 0, 0xFFFFFF, b"").serialize(extensions)
        if len(low) != len(high):
            return b"", None
        differ = [i for i, (a, b) in enumerate(zip(low, high, strict=True)) if a != b]
        if not differ:
            return low, None
        if differ == list(range(differ[0], differ[0] + 3)):
            return low, differ[0]
        return b"", None

    def _packet(
        self, sequence_number: int, timestamp: int, marker: int, abs_send_time: int, payload: bytes
    ) -> RtpPacket:
        packet = RtpPacket(
            payload_type=self._payload_type,
            marker=marker,
            sequence_number=sequence_number,
            timestamp=timestamp,
            ssrc=self.sender._ssrc,
            payload=payload,
        )
        packet.extensions.abs_send_time = abs_send_time
        packet.extensions.mid = self._mid
        return packet

    def wrap_retransmit(
        self, original: Callable[[int], Coroutine[Any, Any, None]]
    ) -> Callable[[int], Coroutine[Any, Any, None]]:
        """aiortc's ``_retransmit``, after rebuilding the asked-for packet into its history."""

        async def retransmit(sequence_number: int) -> None:
            sent = self._sent.get(sequence_number % RTP_HISTORY_SIZE)
            if sent is not None and sent.sequence_number == sequence_number:
                history: dict[int, RtpPacket] = self._get("rtp_history")
                history[sequence_number % RTP_HISTORY_SIZE] = self._packet(*sent)
            await original(sequence_number)

        return retransmit


def _wire(dtls: RTCDtlsTransport) -> Callable[[bytes], None]:
    """What sends one plain RTP packet of ``dtls`` now: :func:`direct_wire`, or where aioice
    is not as expected, aiortc's own coroutine run in place (it counts what it sends)."""
    if dtls._state != DtlsState.CONNECTED:
        raise ConnectionError("Cannot send encrypted RTP, not connected")
    direct = direct_wire(dtls)
    return direct if direct is not None else lambda data: run_now(dtls._send_rtp(data))


def _udp(dtls: RTCDtlsTransport) -> tuple[Any, Any] | None:
    """(nominated ICE pair, its asyncio UDP transport): aioice internals; None where absent."""
    pair = getattr(getattr(dtls.transport, "_connection", None), "_nominated", {}).get(1)
    udp = getattr(getattr(pair, "protocol", None), "transport", None)
    return None if pair is None or udp is None else (pair, udp)


def backlog(dtls: RTCDtlsTransport) -> int:
    """Bytes waiting in the viewer's UDP transport. ``sendto`` never waits: when the socket
    is full, asyncio keeps what it could not send in an unbounded buffer, so a viewer whose
    link (or kernel queue) cannot take its rate would otherwise pile up memory and latency."""
    found = _udp(dtls)
    return 0 if found is None else int(found[1].get_write_buffer_size())


def direct_wire(dtls: RTCDtlsTransport) -> Callable[[bytes], None] | None:
    """SRTP, then the nominated ICE pair's UDP ``sendto``: what ``RTCDtlsTransport._send_rtp``
    and aioice's ``Connection.sendto`` do, without their four coroutines per packet. Reads
    aioice internals (looked up once per frame); None where they are not there."""
    found = _udp(dtls)
    if found is None:
        return None
    pair, udp = found
    protect, sendto, address = dtls._tx_srtp.protect, udp.sendto, pair.remote_addr
    counted = hasattr(dtls, _TX_BYTES) and hasattr(dtls, _TX_PACKETS)

    def send(data: bytes) -> None:
        wire = protect(data)
        sendto(wire, address)
        if counted:  # the transport's own counters (getStats), as _send_rtp keeps them
            setattr(dtls, _TX_BYTES, getattr(dtls, _TX_BYTES) + len(wire))
            setattr(dtls, _TX_PACKETS, getattr(dtls, _TX_PACKETS) + 1)

    return send


def run_now(step: Coroutine[Any, Any, None]) -> None:
    """Run ``step`` to its end in this call. aiortc's RTP send (SRTP, then ICE, then the UDP
    transport's ``sendto``, which buffers rather than waits) never suspends; driving it here
    spares the event loop a task per packet and receiver."""
    try:
        step.send(None)
    except StopIteration:
        return
    step.close()
    raise RuntimeError("aiortc's RTP send suspended; PackedSender expects it never to")


def send_packed(sender: RTCRtpSender, receiver: Receiver) -> PackedSender:
    """Make ``sender`` send ``receiver``'s shared payloads (call before the peer connects:
    aiortc starts the loop when the connection is up)."""
    loop = PackedSender(sender, receiver)
    sender._run_rtp = loop.run  # type: ignore[method-assign]
    sender._retransmit = loop.wrap_retransmit(sender._retransmit)  # type: ignore[method-assign,assignment]
    return loop


def send_attached_packets(pc: RTCPeerConnection) -> None:
    """:func:`send_packed` for every sender of ``pc`` whose :class:`PacketTrack` has its
    receiver attached (the others keep aiortc's own loop)."""
    for transceiver in pc.getTransceivers():
        track = transceiver.sender.track
        if isinstance(track, PacketTrack) and track.receiver is not None:
            send_packed(transceiver.sender, track.receiver)
