"""The engine seam: a base class, a registry and a factory
(:class:`inference.registry.Registry`, the same shape as the TTS backends').

An engine turns a batch of :class:`~inference.frames.LipSyncRequest` (a 16-step mel window plus
the avatar frame it applies to) into one :class:`~inference.frames.FacePatch` per request.
Engines are synchronous and thread-confined: the batcher calls ``infer`` from one worker
thread, so they never touch asyncio. Adding an engine = one module + one ``register_engine``.

An engine also says how much of each window it reads (``lookahead_frames``): a live stream
hands it frame ``i`` as soon as those mel frames exist (inference/live.py), so an engine that
reads less than Wav2Lip's whole 200 ms answers a microphone sooner.

An engine may also finish frames itself (``finishes_frames``, :meth:`LipSyncEngine.infer_i420`):
paste and colour conversion on its own device, for callers that only need I420 planes.
Such an engine may also return before its device is done (:meth:`LipSyncEngine.submit_i420`,
a :class:`PendingFrames`), so its caller prepares the next batch while this one runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

import cv2
import numpy as np

from inference.compositor import composite
from inference.frames import MEL_STEP, FacePatch, LipSyncRequest
from inference.registry import Registry


class EngineUnavailable(RuntimeError):
    """The engine exists but cannot run here (missing checkpoint or optional package).

    The message says what to install or where to put which file.
    """


class PendingFrames(ABC):
    """The finished frames of one submitted batch, perhaps still being computed."""

    @abstractmethod
    def ready(self) -> bool:
        """True once :meth:`result` would not wait (never blocks)."""

    @abstractmethod
    def result(self) -> list[np.ndarray]:
        """The frames, in request order, waiting for the device if need be; raises what the
        computation raised."""


class ReadyFrames(PendingFrames):
    """Frames computed before they were handed over: what synchronous engines return."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self._frames = frames

    def ready(self) -> bool:
        return True

    def result(self) -> list[np.ndarray]:
        return self._frames


class LipSyncEngine(ABC):
    """Base class of every lip-sync engine."""

    name: ClassVar[str]
    """Registry name, e.g. ``viseme`` or ``wav2lip-gan``."""
    device: str = "cpu"
    """Where inference runs (``cpu``, ``cuda``, ``cuda:1`` ...)."""
    backend: str = "numpy"
    """How it runs there (``torch``, ``openvino`` ...), for logs and /api/engines."""
    max_batch: int = 32
    """Largest batch ``infer`` should be given; bigger batches are split by the caller."""
    lookahead_frames: int = MEL_STEP
    """Mel frames of each (80, 16) window the engine reads, from its start (the frame's own
    time): its look-ahead, 12.5 ms each. Wav2Lip reads all 16 (200 ms). A live frame is
    emitted once these exist, the rest of its window padded with silence, and the silence
    test covers the same span, so an engine with fewer must give the same answer whatever
    the columns after them hold (tests/test_engine_contract.py)."""
    finishes_frames: bool = False
    """True when :meth:`infer_i420` does the compositing and conversion on the engine's own
    device (cheaper than the host compositor): callers that need I420 then call it."""

    @abstractmethod
    def infer(self, requests: Sequence[LipSyncRequest]) -> list[FacePatch]:
        """Return one patch per request, in order. Must accept an empty sequence."""

    def infer_i420(
        self, requests: Sequence[LipSyncRequest], feather: bool = True
    ) -> list[np.ndarray]:
        """Finished frames, one uint8 I420 array ``(h * 3 // 2, w)`` (OpenCV's layout, which
        ``inference.mp4.i420_to_video_frame`` takes) per request, in order.

        This default runs :meth:`infer`, the host compositor and OpenCV's BGR -> I420, the
        pictures every other path shows; engines with ``finishes_frames`` override it.
        """
        patches = self.infer(requests)
        if len(patches) != len(requests):
            raise RuntimeError(
                f"engine {self.name} returned {len(patches)} patches for {len(requests)} frames"
            )
        return [
            np.asarray(
                cv2.cvtColor(composite(r.frame, p, feather), cv2.COLOR_BGR2YUV_I420), np.uint8
            )
            for r, p in zip(requests, patches, strict=True)
        ]

    def submit_i420(
        self, requests: Sequence[LipSyncRequest], feather: bool = True
    ) -> PendingFrames:
        """:meth:`infer_i420`, but an engine whose device runs asynchronously returns as soon
        as the batch is queued there. This default computes the frames first."""
        return ReadyFrames(self.infer_i420(requests, feather))

    @property
    def lookahead_ms(self) -> float:
        """The audio after the frame's start that the engine reads, in milliseconds."""
        # A window of MEL_STEP mel frames spans 200 ms (inference.mel, not imported here: it
        # needs librosa, which the GPU machine lacks, tests/test_bench_gpu.py).
        return self.lookahead_frames * 200.0 / MEL_STEP

    def warmup(self) -> None:  # noqa: B027 - optional hook, empty by default on purpose
        """Run once at start-up so the first real request is not slow."""

    def describe(self) -> dict[str, object]:
        """What the engine is, for logs and the API."""
        return {"name": self.name, "device": self.device, "backend": self.backend}


EngineFactory = Callable[..., LipSyncEngine]

# Engines living in optional modules are imported lazily so torch is only loaded when needed.
ENGINES: Registry[LipSyncEngine] = Registry(
    "engine",
    {
        "viseme": "inference.engines.viseme",
        "wav2lip-gan": "inference.engines.wav2lip",
        "wav2lip-nogan": "inference.engines.wav2lip",
    },
)


def register_engine(name: str, factory: EngineFactory) -> None:
    """Make ``factory(**options)`` the way to build engine ``name``."""
    ENGINES.register(name, factory)


def available_engines() -> list[str]:
    """Names of every known engine (whether or not it can run here)."""
    return ENGINES.names()


def create_engine(name: str, **options: object) -> LipSyncEngine:
    """Build engine ``name``; raises ValueError for an unknown name, EngineUnavailable if it
    cannot run here."""
    return ENGINES.create(name, **options)
