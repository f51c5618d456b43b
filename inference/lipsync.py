"""Per-frame work shared by the offline renderer and the realtime pipeline.

Given a stream's audio, its mel frames and (optionally) TTS phoneme timings, build the
:class:`LipSyncRequest` of each video frame, run an engine over them in batches, and
composite the results into full frames.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

from inference.audio_io import rms
from inference.avatar.store import Avatar
from inference.compositor import composite
from inference.engines.base import LipSyncEngine
from inference.frames import (
    FPS,
    MEL_STEP,
    SAMPLES_PER_FRAME,
    LipSyncRequest,
    PhonemeMark,
    StreamState,
)
from inference.mel import HOP, window_for_frame

ANTICIPATION = 0.03
"""Seconds the phoneme lookup runs ahead of the frame's centre: lips lead the sound."""
WINDOW_SAMPLES = MEL_STEP * HOP
"""Audio samples one 16-step mel window spans (200 ms)."""


class PhonemeTimeline:
    """Which phoneme is spoken at a time, from TTS marks (sorted, non-overlapping)."""

    def __init__(self, marks: Sequence[PhonemeMark], offset: float = 0.0) -> None:
        self._marks = list(marks)
        self._starts = [m.start + offset for m in self._marks]
        self._offset = offset

    def at(self, t: float) -> str | None:
        """The phoneme covering time ``t`` (seconds), or None in pauses and outside."""
        i = bisect.bisect_right(self._starts, t) - 1
        if i < 0:
            return None
        mark = self._marks[i]
        return mark.phoneme if t < mark.end + self._offset else None


def window_rms(pcm: np.ndarray, frame_index: int) -> float:
    """RMS of the audio a frame's window covers (what the silence threshold is compared to)."""
    start = frame_index * SAMPLES_PER_FRAME
    return rms(pcm[start : start + WINDOW_SAMPLES])


def build_requests(
    pcm: np.ndarray,
    mel: np.ndarray,
    avatar: Avatar,
    frames: range,
    silence_rms: float,
    phonemes: PhonemeTimeline | None = None,
    stream: StreamState | None = None,
) -> list[LipSyncRequest]:
    """Requests for video frames ``frames`` of a clip whose audio is ``pcm``/``mel``."""
    out = []
    for i in frames:
        t = (i + 0.5) / FPS + ANTICIPATION
        out.append(
            LipSyncRequest(
                mel=window_for_frame(mel, i),
                frame=avatar.frame_at(i),
                silent=window_rms(pcm, i) < silence_rms,
                phoneme=phonemes.at(t) if phonemes is not None else None,
                stream=stream,
            )
        )
    return out


def run_engine(
    engine: LipSyncEngine, requests: Sequence[LipSyncRequest], feather: bool
) -> list[np.ndarray]:
    """Engine + compositor over ``requests`` in batches of the engine's max size."""
    images: list[np.ndarray] = []
    size = max(1, engine.max_batch)
    for start in range(0, len(requests), size):
        batch = requests[start : start + size]
        patches = engine.infer(batch)
        if len(patches) != len(batch):
            raise RuntimeError(
                f"engine {engine.name} returned {len(patches)} patches for {len(batch)} frames"
            )
        images.extend(composite(r.frame, p, feather) for r, p in zip(batch, patches, strict=True))
    return images


def audio_for_frames(pcm: np.ndarray, count: int) -> np.ndarray:
    """``pcm`` cut or zero-padded to exactly ``count`` video frames of audio."""
    need = count * SAMPLES_PER_FRAME
    if pcm.size >= need:
        return pcm[:need]
    return np.concatenate((pcm, np.zeros(need - pcm.size, np.float32)))
