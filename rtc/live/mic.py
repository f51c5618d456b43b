"""The caller's microphone on the session clock: which slot each of its frames takes.

Mic frames keep their own sample clock (frame ``i`` is samples ``[i*640, (i+1)*640)`` of the
caller's audio), mapped onto video slots by an offset chosen when the first frame is
scheduled: far enough ahead that the batcher can finish it. A frame is ready as soon as the
engine's look-ahead has arrived (``lookahead_frames``: 172.5 ms of audio after the frame for
Wav2Lip's whole window, 47.5 ms for the viseme engine; inference/live.py), and its audio goes
out in its slot, so sound and picture still leave together. A frame whose slot has already
passed is dropped; three in a row mean the offset is stale (the network or the batcher
slowed down), so the next frame re-anchors it. Silence for more than two frames closes the
mouth without calling the engine.

An offset chosen too far ahead (the first frames came in a burst after a stall, or the
batcher was slow then) would otherwise cost every later frame that delay for the rest of the
call; so while the mouth is closed, a frame scheduled more than a few slots later than
needed is skipped, pulling the frames after it one slot closer to their audio. Nothing
audible goes: the skipped frame is silence (and, for a caller, is not sent back at all).
How many slots of cushion stay is learned: one to start with, one more for every frame that
came too late (the server or the network does stall), back down one per calm 10 s.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from inference.frames import MEL_STEP, SAMPLE_RATE, SAMPLES_PER_FRAME, StreamState
from inference.live import FrameAudio, WindowStream

LATE_TO_REANCHOR = 3
"""Dropped frames in a row after which the offset is chosen anew."""
SILENT_TO_CLOSE = 2
"""Silent frames after which the mouth shows the idle picture (no engine call)."""
CATCH_UP_SLACK = 1
"""Slots later than the earliest feasible one a closed frame may be before it is skipped, at
first: one, since frames are ready at a 20 ms packet's boundary and so up to a slot apart
in phase (the offset is chosen at the earliest slot; catching up to it exactly would make
the frames of the later phase late)."""
MAX_CATCH_UP_SLACK = 4
"""The most the cushion grows to after late frames (160 ms)."""
CALM_FRAMES = 250
"""Frames (10 s) without a late one after which the cushion shrinks by a slot again."""


@dataclass(frozen=True)
class MicSlot:
    """One microphone frame and the video slot it takes."""

    slot: int
    audio: FrameAudio
    arrived: float
    """Clock time at which the frame's own audio had fully arrived (its latency's start)."""
    closed: bool
    """The mouth is closed (a silent run): show the idle picture, call no engine."""


class MicScheduler:
    """Windows of the caller's audio, queued (bounded) until the pipeline gives them slots;
    ``lookahead_frames`` is the engine's (``LipSyncEngine.lookahead_frames``)."""

    def __init__(self, backlog: int, silence_rms: float, lookahead_frames: int = MEL_STEP) -> None:
        self._windows = WindowStream(lookahead_frames)
        self._queue: deque[tuple[FrameAudio, float]] = deque()
        self._backlog = backlog
        self._silence_rms = silence_rms
        self._offset: int | None = None
        self._late = 0
        self._silent = 0
        self.state = StreamState()
        """Engine smoothing state of the caller's frames (one stream)."""
        self.dropped = 0
        """Frames lost: the backlog overflowed, or their slot had passed."""
        self.skipped = 0
        """Silent frames skipped to bring a too late offset closer to the audio."""
        self.slack = CATCH_UP_SLACK
        """Slots of cushion catching up leaves (grows with late frames, shrinks when calm)."""
        self._calm = 0

    def __len__(self) -> int:
        return len(self._queue)

    def push(self, pcm: np.ndarray, now: float) -> int:
        """Add caller audio (16 kHz mono float32) received at clock time ``now``; the number
        of frames it completed."""
        frames = self._windows.push(pcm)
        received = self._windows.samples_received
        for frame in frames:
            arrived = now - (received - (frame.index + 1) * SAMPLES_PER_FRAME) / SAMPLE_RATE
            if len(self._queue) >= self._backlog:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append((frame, arrived))
        return len(frames)

    def clear(self) -> None:
        """Forget the queued frames and the offset (speech took the face over)."""
        self._queue.clear()
        self._offset = None

    def take(self, next_slot: int, earliest: int, horizon: int) -> Iterator[MicSlot]:
        """The queued frames whose slots are at most ``horizon``, in order, each at a slot
        from ``next_slot`` on (the first free one); a new offset puts the first frame at
        ``earliest`` or later, and closed frames later than that are skipped (catching up)."""
        while self._queue:
            frame, arrived = self._queue[0]
            if self._offset is None:
                self._offset = max(next_slot, earliest) - frame.index
            slot = frame.index + self._offset
            if slot < next_slot:  # its slot is taken or gone
                self._queue.popleft()
                self._dropped_late()
                continue
            if slot > horizon:
                return
            self._queue.popleft()
            self._late = 0
            self._silent = self._silent + 1 if frame.rms < self._silence_rms else 0
            closed = self._silent > SILENT_TO_CLOSE
            # Frames taken together (a backlog) could not all go at ``earliest``: the k-th of
            # them at earliest + k at best.
            due, earliest = earliest, earliest + 1
            if closed and slot > due + self.slack:
                self._offset -= 1  # the next frame takes this one's slot, so none is left empty
                self.skipped += 1
                continue
            self._calm += 1
            if self._calm >= CALM_FRAMES:
                self.slack, self._calm = max(CATCH_UP_SLACK, self.slack - 1), 0
            yield MicSlot(slot, frame, arrived, closed=closed)
            next_slot = slot + 1

    def _dropped_late(self) -> None:
        """A frame came after its slot: count it, keep more cushion from now on, and choose
        the offset anew after LATE_TO_REANCHOR in a row."""
        self.dropped += 1
        self.slack, self._calm = min(MAX_CATCH_UP_SLACK, self.slack + 1), 0
        self._late += 1
        if self._late >= LATE_TO_REANCHOR:
            self._offset, self._late = None, 0
