"""One batch of the batcher between its launch and the delivery of its results.

A batch's frames are finished in one of two ways. Those whose finish is a plain conversion to
a video frame (:data:`I420_TWINS`) go to an engine that finishes frames itself
(``engine.finishes_frames``: Wav2Lip on CUDA) as one ``submit_i420`` call, so paste and colour
conversion stay on its device; the rest (a dissolve, no finish, a host-only engine) go
through the host compositor. :func:`launch` queues the device's share and then does the
host's share, so the two overlap; :func:`collect` waits for the device and applies the
finishes. Between the two the batcher prepares and launches the next batch (batcher.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inference.engines.base import LipSyncEngine, PendingFrames
from inference.frames import LipSyncRequest
from inference.lipsync import infer_and_composite
from inference.mp4 import bgr_to_video_frame, i420_to_video_frame

Finish = Callable[[np.ndarray], Any]
"""Run in the worker on each composited BGR frame (e.g. conversion to an av.VideoFrame)."""

I420_TWINS: dict[Finish, Finish] = {bgr_to_video_frame: i420_to_video_frame}
"""Finishes that only convert the BGR frame, each with the same step from I420 planes (OpenCV's
layout, what ``engine.infer_i420`` returns)."""


@dataclass
class Flight:
    """A launched batch: the device's pending frames and the host's finished results."""

    twins: dict[int, Finish] = field(default_factory=dict)
    """Position in the batch -> the finish applied to the device's I420 frame."""
    pending: PendingFrames | None = None
    results: list[Any] = field(default_factory=list)
    """Per position: the host-finished result (positions in ``twins`` are filled later)."""
    busy: float = 0.0
    """Seconds the worker spent on this batch so far (launching, the host's share, waiting)."""

    def ready(self) -> bool:
        """True when :func:`collect` would not wait for the device."""
        return self.pending is None or self.pending.ready()


def launch(
    engine: LipSyncEngine,
    requests: Sequence[LipSyncRequest],
    finishes: Sequence[Finish | None],
    feather: bool,
) -> Flight:
    """Queue the batch's device share, then compute its host share (meanwhile the device
    runs). A batch may so become two engine calls; an engine that finishes frames must
    therefore keep no state across a stream's frames (Wav2Lip keeps none)."""
    t0 = time.perf_counter()
    flight = Flight(results=[None] * len(requests))
    if engine.finishes_frames:
        flight.twins = {
            k: twin
            for k, finish in enumerate(finishes)
            if finish is not None and (twin := I420_TWINS.get(finish)) is not None
        }
    if flight.twins:
        flight.pending = engine.submit_i420([requests[k] for k in flight.twins], feather)
    rest = [k for k in range(len(requests)) if k not in flight.twins]
    if rest:
        images = infer_and_composite(engine, [requests[k] for k in rest], feather)
        for k, image in zip(rest, images, strict=True):
            finish = finishes[k]
            flight.results[k] = finish(image) if finish is not None else image
    flight.busy = time.perf_counter() - t0
    return flight


def collect(engine: LipSyncEngine, flight: Flight) -> list[Any]:
    """Each position's result, in order, once the device's frames are back."""
    t0 = time.perf_counter()
    if flight.pending is not None:
        frames = flight.pending.result()
        if len(frames) != len(flight.twins):
            raise RuntimeError(
                f"engine {engine.name} returned {len(frames)} frames for {len(flight.twins)}"
            )
        for (k, twin), frame in zip(flight.twins.items(), frames, strict=True):
            flight.results[k] = twin(frame)
    flight.busy += time.perf_counter() - t0
    return flight.results
