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
        ``earliest`` or later."""
        while self._queue:
            frame, arrived = self._queue[0]
            if self._offset is None:
                self._offset = max(next_slot, earliest) - frame.index
            slot = frame.index + self._offset
            if slot < next_slot:  # its slot is taken or gone
                self._queue.popleft()
                self.dropped += 1
                self._late += 1
                if self._late >= LATE_TO_REANCHOR:
                    self._offset, self._late = None, 0
                continue
            if slot > horizon:
                return
            self._queue.popleft()
            self._late = 0
            self._silent = self._silent + 1 if frame.rms < self._silence_rms else 0
            yield MicSlot(slot, frame, arrived, closed=self._silent > SILENT_TO_CLOSE)
            next_slot = slot + 1
