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

Frames go to the engine through batch_flight.py (device-finished or host-composited). An
engine whose device runs asynchronously (Wav2Lip on CUDA) returns from the launch while its
batch runs: the worker then gathers and launches the next batch before it delivers the one in
flight, so the device never waits for the host's share of the work between batches. A
synchronous engine's batch is delivered as soon as it is launched.
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

from config import AppConfig
from inference.engines.base import LipSyncEngine
from inference.frames import LipSyncRequest
from inference.threads import set_os_thread_name
from rtc.live.batch_flight import I420_TWINS, Finish, Flight, collect, launch

log = logging.getLogger(__name__)

__all__ = ["I420_TWINS", "Batcher", "BatcherClosed", "BatcherPool", "BatcherStats", "Finish"]


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
        flying: _Flying | None = None
        while True:
            batch, expired = self._next_batch(flying.due if flying is not None else None)
            for item in expired:
                item.loop.call_soon_threadsafe(_resolve, item.future, None)
            launched = self._launch(batch) if batch else None
            if flying is not None:
                # It ran on the device while this batch was gathered and queued behind it.
                self._deliver(flying)
            flying = None
            if launched is not None:
                if launched.flight.ready():  # synchronous engines: no reason to hold it
                    self._deliver(launched)
                else:
                    flying = launched
            if batch is None:
                return

    def _next_batch(self, due: float | None) -> tuple[list[_Item] | None, list[_Item]]:
        """The next batch (None once closed) and the frames that expired. ``due``: when the
        batch in flight should be done (None if none is): until then frames may gather,
        but an empty queue does not wait, the flight is delivered instead."""
        with self._cond:
            while not self._heap and not self._closed:
                if due is not None:
                    return [], []
                self._cond.wait()
            if self._closed:
                return None, []
            # Wait for the batch to fill, but never past the oldest frame's max_wait, nor so
            # long that the most urgent frame would miss its slot.
            while len(self._heap) < self.max_batch and not self._closed:
                now = self._now()
                oldest = min(item.submitted for item in self._heap)
                urgent = self._heap[0].deadline - self._batch_cost
                done = due if due is not None else float("inf")
                remaining = min(oldest + self.max_wait, urgent, done) - now
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

    def _launch(self, batch: list[_Item]) -> _Flying | None:
        """Queue the batch on the engine (see batch_flight.py); None if that failed (every
        session of the batch is told; the worker lives on)."""
        try:
            flight = launch(
                self.engine,
                [item.request for item in batch],
                [item.finish for item in batch],
                self.feather,
            )
        except Exception as e:
            self._fail_batch(batch, e)
            return None
        return _Flying(batch, flight, self._now() + self._batch_cost)

    def _deliver(self, flying: _Flying) -> None:
        batch, flight = flying.batch, flying.flight
        try:
            results = collect(self.engine, flight)
        except Exception as e:
            self._fail_batch(batch, e)
            return
        cost = flight.busy
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

    def _fail_batch(self, batch: list[_Item], error: Exception) -> None:
        log.exception("engine %s failed on a batch of %d", self.engine.name, len(batch))
        for item in batch:
            item.loop.call_soon_threadsafe(_fail, item.future, error)


@dataclass
class _Flying:
    """A launched batch, its items and when the worker expects it done (``now`` clock)."""

    batch: list[_Item]
    flight: Flight
    due: float


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
