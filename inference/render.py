"""Offline render: text or audio in, lip-synced MP4 out (the ``render`` command and
``POST /api/generate``)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inference.audio_io import SourceAudio
from inference.avatar.moving import MovingPhoto
from inference.avatar.store import Avatar
from inference.engines.base import LipSyncEngine
from inference.frames import SAMPLE_RATE, SAMPLES_PER_FRAME, PhonemeMark, StreamState
from inference.lipsync import (
    PhonemeTimeline,
    audio_for_frames,
    build_requests,
    run_engine_i420,
)
from inference.mel import frame_count, melspectrogram
from inference.mp4 import Mp4Writer

log = logging.getLogger(__name__)

CHUNK_FRAMES = 64
"""Frames built, inferred and encoded per step; bounds memory for long texts."""


@dataclass(frozen=True)
class RenderStats:
    """What a render cost, in seconds (``tts`` is filled in by the caller that ran TTS)."""

    frames: int
    duration: float
    lipsync: float
    encode: float
    tts: float = 0.0

    @property
    def total(self) -> float:
        return self.tts + self.lipsync + self.encode

    def headers(self) -> dict[str, str]:
        """The timings as HTTP response headers."""
        return {
            "X-Timing-TTS": f"{self.tts:.3f}",
            "X-Timing-Lipsync": f"{self.lipsync:.3f}",
            "X-Timing-Encode": f"{self.encode:.3f}",
            "X-Timing-Total": f"{self.total:.3f}",
            "X-Video-Duration": f"{self.duration:.3f}",
            "X-Video-Frames": str(self.frames),
        }


@dataclass(frozen=True)
class RenderSettings:
    """How a render treats quiet audio and pastes the mouth (from the engine and avatar
    config sections)."""

    silence_rms: float = 0.004
    """Windows quieter than this keep the mouth closed and skip the model."""
    feather: bool = True
    """Blend the mouth with a feathered mask (False: paste the box as it is)."""
    motion_seed: int | None = 0
    """Seed of a still photo's head sway and breathing, the live sessions' motion
    (inference/avatar/sway.py); None: the photo stays still."""


DEFAULT_SETTINGS = RenderSettings()


def render_to_mp4(
    pcm: np.ndarray,
    avatar: Avatar,
    engine: LipSyncEngine,
    out_path: Path,
    *,
    phonemes: tuple[PhonemeMark, ...] = (),
    settings: RenderSettings = DEFAULT_SETTINGS,
    progress: Callable[[int, int], None] | None = None,
    source: SourceAudio | None = None,
) -> RenderStats:
    """Lip-sync ``pcm`` (16 kHz mono float32) onto ``avatar`` and write ``out_path``.

    Audio is padded to a whole number of frames, so audio and video durations match.
    ``progress(done, total)`` is called after every chunk. ``source``: the same sound at its
    own rate and channels, which the file then carries instead of the 16 kHz mono copy.
    """
    if pcm.size == 0:
        raise ValueError("no audio to render")
    count = frame_count(pcm.size)
    audio = audio_for_frames(pcm, count)
    mel = melspectrogram(audio)
    timeline = PhonemeTimeline(phonemes) if phonemes else None
    stream = StreamState()
    height, width = avatar.frames[0].image.shape[:2]
    seed = settings.motion_seed
    moving = None if seed is None else MovingPhoto.for_avatar(avatar, seed)
    lipsync = 0.0
    # Encoding runs in its own thread (PyAV releases the GIL while x264 works), so on two
    # cores lip-sync of chunk k+1 overlaps encoding of chunk k. The queue is bounded.
    chunks: queue.Queue[tuple[list[np.ndarray], np.ndarray] | None] = queue.Queue(maxsize=2)
    encoder = _Encoder(out_path, width, height, chunks, source)
    encoder.start()
    try:
        for start in range(0, count, CHUNK_FRAMES):
            frames = range(start, min(count, start + CHUNK_FRAMES))
            t0 = time.perf_counter()
            requests = build_requests(
                audio,
                mel,
                avatar,
                frames,
                settings.silence_rms,
                timeline,
                stream,
                engine.lookahead_frames,
            )
            # I420 from the engine's device or from the one colour conversion, then the head's
            # sway on the planes exactly as a live session of the same seed moves them.
            pictures = run_engine_i420(engine, requests, settings.feather)
            if moving is not None:
                pictures = [moving.moved(p, i) for i, p in zip(frames, pictures, strict=True)]
            lipsync += time.perf_counter() - t0
            if source is None:
                span = audio[frames.start * SAMPLES_PER_FRAME : frames.stop * SAMPLES_PER_FRAME]
            else:  # the same time span at the source's rate, padded like the 16 kHz copy
                span = source.span(frames.start / 25.0, frames.stop / 25.0)
            encoder.put((pictures, span))
            if progress is not None:
                progress(frames.stop, count)
    finally:
        encoder.put(None)
        encoder.join()
    if encoder.error is not None:
        raise encoder.error
    return RenderStats(frames=count, duration=count / 25.0, lipsync=lipsync, encode=encoder.busy)


class _Encoder(threading.Thread):
    """Consumes (I420 frames, audio) chunks and writes the MP4; ``busy`` is its working time."""

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        chunks: queue.Queue[tuple[list[np.ndarray], np.ndarray] | None],
        source: SourceAudio | None = None,
    ) -> None:
        super().__init__(name="mp4-encoder", daemon=True)
        self._path, self._size, self._chunks = path, (width, height), chunks
        self._audio = (SAMPLE_RATE, 1) if source is None else (source.rate, source.channels)
        self.preset = "ultrafast"
        self.busy = 0.0
        self.error: BaseException | None = None

    def put(self, item: tuple[list[np.ndarray], np.ndarray] | None) -> None:
        """Hand a chunk over; raises the encoder's error instead of blocking on a dead thread."""
        while True:
            if self.error is not None:
                raise self.error
            try:
                self._chunks.put(item, timeout=0.2)
                return
            except queue.Full:
                if not self.is_alive():
                    raise RuntimeError("the MP4 encoder stopped") from self.error

    def run(self) -> None:
        finished = False
        try:
            rate, channels = self._audio
            with Mp4Writer(
                self._path, *self._size, preset=self.preset, audio=(rate, channels)
            ) as writer:
                while (item := self._chunks.get()) is not None:
                    t0 = time.perf_counter()
                    pictures, span = item
                    for picture in pictures:
                        writer.write_i420(picture)
                    writer.write_audio(span)
                    self.busy += time.perf_counter() - t0
                finished = True
                t0 = time.perf_counter()
            self.busy += time.perf_counter() - t0
        except BaseException as e:  # handed to the caller's thread, never lost
            self.error = e
            # Drain so the producer is never stuck on a full queue.
            while not finished and self._chunks.get() is not None:
                pass
