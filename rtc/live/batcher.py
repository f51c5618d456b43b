"""One batcher per engine, shared by every realtime session.

Sessions submit frames (a :class:`LipSyncRequest` with the time its video slot is released);
one worker thread gathers them into batches (up to ``max_batch`` frames, waiting at most
``max_wait`` for a batch to fill), runs ``engine.infer`` and the compositor, and hands each
frame back to its session's event loop. The engine is only ever called from that thread.

Scheduling: earliest deadline first, but each session pending is guaranteed a fair share of
every batch, so one session that floods the queue (a long utterance submitted at once) cannot
push the others past their deadlines. Frames already past their deadline are not inferred
(their video slot is gone; the track repeats the previous frame), so an overloaded engine
sheds load instead of falling further behind. Stale work is dropped with :meth:`flush`.

An engine that finishes frames itself (``engine.finishes_frames``: Wav2Lip on CUDA) gets the
frames whose finish is a plain conversion to a video frame (:data:`I420_TWINS`) as one
``infer_i420`` call, so paste and colour conversion stay on its device; frames that need the
BGR picture (a dissolve, no finish) still go through the host compositor.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from config import AppConfig
from inference.engines.base import LipSyncEngine
from inference.frames import LipSyncRequest
from inference.lipsync import infer_and_composite
from inference.mp4 import bgr_to_video_frame, i420_to_video_frame
from inference.threads import set_os_thread_name

log = logging.getLogger(__name__)

Finish = Callable[[np.ndarray], Any]
"""Run in the worker on each composited BGR frame (e.g. conversion to an av.VideoFrame)."""

I420_TWINS: dict[Finish, Finish] = {bgr_to_video_frame: i420_to_video_frame}
"""Finishes that only convert the BGR frame, each with the same step from I420 planes (OpenCV's
layout, what ``engine.infer_i420`` returns)."""


class BatcherClosed(RuntimeError):
    """The batcher was closed; no more frames are accepted."""


@dataclass(order=True)
class _Item:
    deadline: float
    seq: int
    owner: str = field(compare=False)
    request: LipSyncRequest = field(compare=False)
    finish: Finish | None = field(compare=False)
    future: asyncio.Future[Any] = field(compare=False)
    loop: asyncio.AbstractEventLoop = field(compare=False)
    submitted: float = field(compare=False)


@dataclass
class BatcherStats:
    """Counters for logs, the API and benchmarks."""

    batches: int = 0
    frames: int = 0
    expired: int = 0
    """Frames dropped because their deadline passed before they could be inferred."""
    flushed: int = 0
    """Frames dropped by :meth:`Batcher.flush` (interruptions, closed sessions)."""
    busy: float = 0.0
    """Seconds the worker spent in the engine and compositor."""
    latency: float = 0.05
    """Expected seconds from submit to result of an urgent frame (the batch in flight plus
    its own, smoothed): new speech is scheduled at least this far ahead."""


class Batcher:
    """Batches frames of many sessions into calls of one engine, in one worker thread."""

    def __init__(
        self,
        engine: LipSyncEngine,
        *,
        max_batch: int = 16,
        max_wait: float = 0.010,
        feather: bool = True,
        now: Callable[[], float] = time.monotonic,
        drop_expired: bool = True,
    ) -> None:
        self.engine = engine
        self.max_batch = max(1, min(max_batch, engine.max_batch))
        self.max_wait = max_wait
        self.feather = feather
        self.drop_expired = drop_expired
        self.stats = BatcherStats()
        self._now = now
        self._heap: list[_Item] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._batch_cost = 0.01  # smoothed seconds per batch, to stop waiting in time
        self._frame_cost = 0.0  # smoothed seconds per frame, to size batches for deadlines

    @property
    def pending(self) -> int:
        """Frames waiting for the engine."""
        with self._cond:
            return len(self._heap)

    def submit(
        self,
        owner: str,
        requests: Sequence[LipSyncRequest],
        deadlines: Sequence[float],
        finish: Finish | None = None,
    ) -> list[asyncio.Future[Any]]:
        """Queue frames of session ``owner``; one future per frame, in order.

        A future resolves to ``finish(image)`` (the composited BGR image when ``finish`` is
        None), to None when the frame expired before it could be inferred, is cancelled by
        :meth:`flush`, and carries the engine's exception if the batch failed.
        """
        if len(requests) != len(deadlines):
            raise ValueError("one deadline per request is needed")
        loop = asyncio.get_running_loop()
        now = self._now()
        items = [
            _Item(
                deadline, next(self._seq), owner, request, finish, loop.create_future(), loop, now
            )
            for request, deadline in zip(requests, deadlines, strict=True)
        ]
        with self._cond:
            if self._closed:
                raise BatcherClosed(f"batcher of {self.engine.name} is closed")
            for item in items:
                heapq.heappush(self._heap, item)
            self._ensure_thread()
            self._cond.notify()
        return [item.future for item in items]

    def flush(self, owner: str) -> int:
        """Drop every pending frame of ``owner`` (their futures are cancelled)."""
        with self._cond:
            keep = [item for item in self._heap if item.owner != owner]
            dropped = [item for item in self._heap if item.owner == owner]
            if dropped:
                self._heap = keep
                heapq.heapify(self._heap)
                self.stats.flushed += len(dropped)
        for item in dropped:
            item.loop.call_soon_threadsafe(_cancel, item.future)
        return len(dropped)

    def close(self) -> None:
        """Stop the worker (after its current batch) and cancel everything pending."""
        with self._cond:
            self._closed = True
            dropped, self._heap = self._heap, []
            self._cond.notify_all()
            thread = self._thread
        for item in dropped:
            item.loop.call_soon_threadsafe(_cancel, item.future)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

    def _ensure_thread(self) -> None:
        # Started on first use so servers (and tests) that never stream pay nothing.
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, daemon=True, name=f"batcher-{self.engine.name}"
            )
            self._thread.start()

    def _run(self) -> None:
        set_os_thread_name()
        while True:
            batch, expired = self._next_batch()
            if batch is None:
                return
            for item in expired:
                item.loop.call_soon_threadsafe(_resolve, item.future, None)
            if batch:
                self._infer(batch)

    def _next_batch(self) -> tuple[list[_Item] | None, list[_Item]]:
        with self._cond:
            while not self._heap and not self._closed:
                self._cond.wait()
            if self._closed:
                return None, []
            # Wait for the batch to fill, but never past the oldest frame's max_wait, nor so
            # long that the most urgent frame would miss its slot.
            while len(self._heap) < self.max_batch and not self._closed:
                now = self._now()
                oldest = min(item.submitted for item in self._heap)
                urgent = self._heap[0].deadline - self._batch_cost
                remaining = min(oldest + self.max_wait, urgent) - now
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
                if not self._heap:
                    return [], []
            if self._closed:
                return None, []
            expired: list[_Item] = []
            now = self._now()
            if self.drop_expired:
                # Past its slot, or too late to make it even alone: inferring it would only
                # delay the frames that can still be on time.
                while self._heap and self._heap[0].deadline < now + self._frame_cost:
                    expired.append(heapq.heappop(self._heap))
                self.stats.expired += len(expired)
            if not self._heap:
                return [], expired
            # Small enough that the most urgent frame is back before its slot.
            budget = self._heap[0].deadline - now
            size = max(1, min(self.max_batch, int(budget / max(self._frame_cost, 1e-4))))
            return self._select(size), expired

    def _select(self, size: int) -> list[_Item]:
        """Up to ``size`` items: each owner's fair share first, then by deadline."""
        ordered = sorted(self._heap)
        owners = {item.owner for item in ordered}
        share = max(1, size // max(1, len(owners)))
        taken: list[_Item] = []
        per_owner: dict[str, int] = {}
        rest: list[_Item] = []
        for item in ordered:
            count = per_owner.get(item.owner, 0)
            if count < share and len(taken) < size:
                per_owner[item.owner] = count + 1
                taken.append(item)
            else:
                rest.append(item)
        room = size - len(taken)
        taken += rest[:room]
        chosen = {id(item) for item in taken}
        self._heap = [item for item in ordered if id(item) not in chosen]  # sorted: a heap
        # Frames of one stream must reach the engine in order (engines smooth across them).
        taken.sort()
        return taken

    def _infer(self, batch: list[_Item]) -> None:
        t0 = time.perf_counter()
        try:
            results = self._finished(batch)
        except Exception as e:  # reported to every session of the batch; the worker lives on
            log.exception("engine %s failed on a batch of %d", self.engine.name, len(batch))
            for item in batch:
                item.loop.call_soon_threadsafe(_fail, item.future, e)
            return
        cost = time.perf_counter() - t0
        self.stats.batches += 1
        self.stats.frames += len(batch)
        self.stats.busy += cost
        self._batch_cost = 0.8 * self._batch_cost + 0.2 * cost
        per_frame = cost / len(batch)
        self._frame_cost = (
            per_frame if not self._frame_cost else (0.8 * self._frame_cost + 0.2 * per_frame)
        )
        # An urgent frame submitted now waits for the batch in flight, then runs in its own.
        # (Measured submit-to-result times would include the slack of frames submitted early
        # on purpose, and scheduling by them would push speech ever further ahead.)
        self.stats.latency = self.max_wait + 2 * self._batch_cost
        for item, result in zip(batch, results, strict=True):
            item.loop.call_soon_threadsafe(_resolve, item.future, result)

    def _finished(self, batch: list[_Item]) -> list[Any]:
        """Each item's result, in order: its finish applied to its frame, finished by the
        engine itself where it can (one ``infer_i420`` call), else by the host compositor.

        A batch may so become two engine calls; an engine that finishes frames must therefore
        keep no state across a stream's frames (Wav2Lip keeps none).
        """
        twins = {
            k: twin
            for k, item in enumerate(batch)
            if self.engine.finishes_frames
            and item.finish is not None
            and (twin := I420_TWINS.get(item.finish)) is not None
        }
        results: list[Any] = [None] * len(batch)
        if twins:
            frames = self.engine.infer_i420([batch[k].request for k in twins], self.feather)
            if len(frames) != len(twins):
                raise RuntimeError(
                    f"engine {self.engine.name} returned {len(frames)} frames for {len(twins)}"
                )
            for (k, twin), frame in zip(twins.items(), frames, strict=True):
                results[k] = twin(frame)
        rest = [k for k in range(len(batch)) if k not in twins]
        if rest:
            images = infer_and_composite(
                self.engine, [batch[k].request for k in rest], self.feather
            )
            for k, image in zip(rest, images, strict=True):
                finish = batch[k].finish
                results[k] = finish(image) if finish is not None else image
        return results


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _cancel(future: asyncio.Future[Any]) -> None:
    future.cancel()


class BatcherPool:
    """The batchers of one server, one per engine, created on first use."""

    def __init__(
        self, *, max_batch: int = 16, max_wait: float = 0.010, feather: bool = True
    ) -> None:
        self._batchers: dict[str, Batcher] = {}
        self._options = {"max_batch": max_batch, "max_wait": max_wait, "feather": feather}
        self._lock = threading.Lock()

    @classmethod
    def for_config(cls, config: AppConfig) -> BatcherPool:
        """The pool a server (or the presenter) runs with: the one place its options are
        read from the configuration."""
        return cls(max_batch=config.engines.max_batch, feather=config.avatars.feather)

    def get(self, engine: LipSyncEngine) -> Batcher:
        """The batcher of ``engine`` (by name)."""
        with self._lock:
            batcher = self._batchers.get(engine.name)
            if batcher is None:
                batcher = Batcher(engine, **self._options)  # type: ignore[arg-type]
                self._batchers[engine.name] = batcher
            return batcher

    def describe(self) -> dict[str, dict[str, float | int]]:
        """Stats per engine."""
        return {name: vars(b.stats).copy() for name, b in self._batchers.items()}

    def close(self) -> None:
        """Close every batcher and join their threads."""
        with self._lock:
            batchers, self._batchers = list(self._batchers.values()), {}
        for batcher in batchers:
            batcher.close()
