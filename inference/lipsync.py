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


def window_rms(pcm: np.ndarray, frame_index: int, lookahead_frames: int = MEL_STEP) -> float:
    """RMS of the 200 ms of audio that end where an engine's reading of a frame's window ends
    (``lookahead_frames`` hops after the frame's start): what the silence threshold is
    compared to, offline and live alike (inference/live.py).

    For Wav2Lip's whole window that is the window's own 200 ms. An engine with a shorter
    look-ahead gets the same 200 ms, ending sooner: a live stream has no later audio yet, and
    a span as short as its look-ahead would call the quiet stretches inside words silence
    (bench/vowels.py: 4 points less on quiet speech).
    """
    end = frame_index * SAMPLES_PER_FRAME + lookahead_frames * HOP
    return rms(pcm[max(0, end - WINDOW_SAMPLES) : end])


def build_requests(
    pcm: np.ndarray,
    mel: np.ndarray,
    avatar: Avatar,
    frames: range,
    silence_rms: float,
    phonemes: PhonemeTimeline | None = None,
    stream: StreamState | None = None,
    lookahead_frames: int = MEL_STEP,
) -> list[LipSyncRequest]:
    """Requests for video frames ``frames`` of a clip whose audio is ``pcm``/``mel``, silent
    where the part of the window the engine reads (its ``lookahead_frames``) is quiet."""
    return [
        frame_request(
            window_for_frame(mel, i),
            window_rms(pcm, i, lookahead_frames),
            avatar,
            i,
            silence_rms,
            phoneme_at(phonemes, i),
            stream,
        )
        for i in frames
    ]


def phoneme_at(timeline: PhonemeTimeline | None, clip_frame: int) -> str | None:
    """The phoneme frame ``clip_frame`` of a clip shows: looked up ANTICIPATION ahead of the
    frame's centre, since lips lead the sound."""
    if timeline is None:
        return None
    return timeline.at((clip_frame + 0.5) / FPS + ANTICIPATION)


def frame_request(
    window: np.ndarray,
    level: float,
    avatar: Avatar,
    avatar_index: int,
    silence_rms: float,
    phoneme: str | None,
    stream: StreamState | None,
) -> LipSyncRequest:
    """One frame's request, offline and live alike: its mel ``window``, the avatar's frame
    ``avatar_index`` of the loop, silent when the window's RMS ``level`` is below
    ``silence_rms``."""
    return LipSyncRequest(
        mel=window,
        frame=avatar.frame_at(avatar_index),
        silent=level < silence_rms,
        phoneme=phoneme,
        stream=stream,
    )


def infer_and_composite(
    engine: LipSyncEngine, batch: Sequence[LipSyncRequest], feather: bool
) -> list[np.ndarray]:
    """One engine call over ``batch`` and the composited full frames, one per request;
    RuntimeError when the engine breaks its contract (a patch per request)."""
    patches = engine.infer(batch)
    if len(patches) != len(batch):
        raise RuntimeError(
            f"engine {engine.name} returned {len(patches)} patches for {len(batch)} frames"
        )
    return [composite(r.frame, p, feather) for r, p in zip(batch, patches, strict=True)]


def run_engine(
    engine: LipSyncEngine, requests: Sequence[LipSyncRequest], feather: bool
) -> list[np.ndarray]:
    """Engine + compositor over ``requests`` in batches of the engine's max size."""
    images: list[np.ndarray] = []
    size = max(1, engine.max_batch)
    for start in range(0, len(requests), size):
        images.extend(infer_and_composite(engine, requests[start : start + size], feather))
    return images


def run_engine_i420(
    engine: LipSyncEngine, requests: Sequence[LipSyncRequest], feather: bool
) -> list[np.ndarray]:
    """:func:`run_engine`'s frames as I420 planes (``(h * 3 // 2, w)`` uint8, OpenCV's
    layout), in batches of the engine's max size, all queued before any is collected. An
    engine that finishes frames (Wav2Lip on CUDA) makes them on its device meanwhile; any
    other runs :meth:`LipSyncEngine.infer_i420`'s compositor and one OpenCV conversion."""
    size = max(1, engine.max_batch)
    pending = [
        engine.submit_i420(requests[start : start + size], feather)
        for start in range(0, len(requests), size)
    ]
    return [frame for batch in pending for frame in batch.result()]


def audio_for_frames(pcm: np.ndarray, count: int) -> np.ndarray:
    """``pcm`` cut or zero-padded to exactly ``count`` video frames of audio."""
    need = count * SAMPLES_PER_FRAME
    if pcm.size >= need:
        return pcm[:need]
    return np.concatenate((pcm, np.zeros(need - pcm.size, np.float32)))
