"""An engine shared by every session and request: one thread at a time in ``infer`` (some
backends keep one infer request and are not re-entrant), with counters of what it did.

Different engines run in parallel; the counters are read by /metrics without waiting for a
running batch.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from inference.engines.base import LipSyncEngine, PendingFrames
from inference.frames import FacePatch, LipSyncRequest

BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
"""Upper bounds of the batch-size histogram (frames per ``infer`` call)."""
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds (seconds) of the ``infer`` duration histogram."""

_Result = TypeVar("_Result")


class Buckets:
    """A fixed-bucket histogram that engines keep without depending on a metrics library.

    The HTTP layer reads it at scrape time (rtc/http/metrics.py); counts only ever grow.
    """

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is >= it."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs as Prometheus wants them, ``+Inf`` last."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


@dataclass
class InferStats:
    """What one engine did: batch sizes, time per call and failures (all cumulative)."""

    batch_sizes: Buckets = field(default_factory=lambda: Buckets(BATCH_BUCKETS))
    seconds: Buckets = field(default_factory=lambda: Buckets(LATENCY_BUCKETS))
    failures: int = 0

    def snapshot(self) -> InferStats:
        """A copy that a reader can use while the engine keeps counting."""
        copy = InferStats(failures=self.failures)
        for mine, theirs in ((copy.batch_sizes, self.batch_sizes), (copy.seconds, self.seconds)):
            mine.counts, mine.total = list(theirs.counts), theirs.total
        return copy


class SerialEngine(LipSyncEngine):
    """Wraps an engine so only one thread runs ``infer`` (or ``infer_i420``) on it at a time,
    and counts calls."""

    def __init__(self, inner: LipSyncEngine) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]  # mirrors the wrapped engine's name
        self.device = inner.device
        self.backend = inner.backend
        self.max_batch = inner.max_batch
        self.finishes_frames = inner.finishes_frames
        self.lookahead_frames = inner.lookahead_frames
        self._lock = threading.Lock()
        # Separate from _lock so a metrics scrape never waits for a running batch.
        self._stats_lock = threading.Lock()
        self._stats = InferStats()

    @property
    def stats(self) -> InferStats:
        """A consistent copy of the counters (batch sizes, seconds per call, failures)."""
        with self._stats_lock:
            return self._stats.snapshot()

    def infer(self, requests: Sequence[LipSyncRequest]) -> list[FacePatch]:
        """Run the wrapped engine under this engine's lock."""
        return self._counted(len(requests), lambda: self.inner.infer(requests))

    def infer_i420(
        self, requests: Sequence[LipSyncRequest], feather: bool = True
    ) -> list[np.ndarray]:
        """The wrapped engine's finished frames (its device path, if it has one), under the
        same lock and counters as :meth:`infer`."""
        return self._counted(len(requests), lambda: self.inner.infer_i420(requests, feather))

    def submit_i420(
        self, requests: Sequence[LipSyncRequest], feather: bool = True
    ) -> PendingFrames:
        """The wrapped engine's :meth:`~LipSyncEngine.submit_i420` under the lock (the
        lock covers the queueing, not the device's work); the call's seconds are counted
        from the submit to the end of the result's wait."""
        started = time.perf_counter()
        with self._lock:
            try:
                pending = self.inner.submit_i420(requests, feather)
            except Exception:
                self._failed()
                raise
        return _CountedFrames(pending, self, len(requests), started)

    def _observe(self, frames: int, seconds: float) -> None:
        with self._stats_lock:
            self._stats.batch_sizes.observe(frames)
            self._stats.seconds.observe(seconds)

    def _failed(self) -> None:
        with self._stats_lock:
            self._stats.failures += 1

    def _counted(self, frames: int, call: Callable[[], _Result]) -> _Result:
        with self._lock:
            t0 = time.perf_counter()
            try:
                result = call()
            except Exception:
                self._failed()
                raise
            elapsed = time.perf_counter() - t0
        self._observe(frames, elapsed)
        return result

    def warmup(self) -> None:
        """Warm the wrapped engine up."""
        with self._lock:
            self.inner.warmup()

    def describe(self) -> dict[str, object]:
        """The wrapped engine's description."""
        return self.inner.describe()


class _CountedFrames(PendingFrames):
    """A submitted batch whose seconds and outcome reach the engine's counters once its
    result has been waited for (once, however often it is asked)."""

    def __init__(self, inner: PendingFrames, owner: SerialEngine, frames: int, started: float):
        self._inner = inner
        self._owner = owner
        self._frames = frames
        self._started = started
        self._counted = False

    def ready(self) -> bool:
        return self._inner.ready()

    def result(self) -> list[np.ndarray]:
        try:
            frames = self._inner.result()
        except Exception:
            if not self._counted:
                self._counted = True
                self._owner._failed()
            raise
        if not self._counted:
            self._counted = True
            self._owner._observe(self._frames, time.perf_counter() - self._started)
        return frames
