"""The caller's microphone is received with the shortest jitter buffer aiortc can have.

aiortc's ``RTCRtpReceiver`` holds received audio in a ``JitterBuffer(capacity=16,
prefetch=4)``: a 20 ms packet is handed to the decoder only once four later packets are
there, 80 ms of every microphone's delay to the mouth. The prefetch buys nothing here:

- the buffer hands out at most one frame per packet added, whatever the prefetch, so it
  never smooths a burst (a burst of packets comes out as a burst of frames) and a packet
  that overtakes another is waited for the same way with any prefetch;
- the pipeline has its own allowance for arrival jitter (``PipelineOptions.mic_jitter``)
  and a frame that misses its slot is dropped there (rtc/live/mic.py).

So the buffer is replaced by one with ``prefetch=1`` (a packet is released when the next
one arrives: the least a buffer that finds a frame's end by the next timestamp can do).
aiortc offers no setting for it; the receiver's private attribute is replaced, before
any packet has arrived, and only when it is what this was written against (aiortc 1.x):
otherwise the default stays and a warning says so. tests/test_webrtc_receiving.py checks it
and the microphone test of tests/test_realtime_webrtc.py that a session does it.
"""

from __future__ import annotations

import logging

from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer

log = logging.getLogger(__name__)

MIC_PREFETCH = 1
"""Packets after a microphone packet that must have arrived before it is decoded."""
_ATTRIBUTE = "_RTCRtpReceiver__jitter_buffer"  # RTCRtpReceiver.__jitter_buffer, name-mangled


def shorten_mic_buffer(pc: RTCPeerConnection, session: str) -> bool:
    """Give the audio receivers of ``pc`` (the caller's microphone) a MIC_PREFETCH jitter
    buffer; call after the offer is applied, before media flows. True when it was done."""
    done = False
    for transceiver in pc.getTransceivers():
        if transceiver.kind != "audio":
            continue
        receiver = transceiver.receiver
        current = getattr(receiver, _ATTRIBUTE, None)
        # A buffer that has seen a packet (_origin set) is in use: replacing it would lose them.
        if not isinstance(current, JitterBuffer) or getattr(current, "_origin", 0) is not None:
            log.warning(
                "session=%s this aiortc's audio receiver has no fresh jitter buffer to "
                "replace; the microphone keeps aiortc's 80 ms prefetch",
                session,
            )
            continue
        setattr(
            receiver, _ATTRIBUTE, JitterBuffer(capacity=current.capacity, prefetch=MIC_PREFETCH)
        )
        done = True
    return done
