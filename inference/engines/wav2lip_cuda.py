"""The ``cuda`` backend: the Wav2Lip generator in fp16 on a CUDA device, in batch buckets that
can be replayed from CUDA graphs.

A forward pass of the generator launches ~200 small kernels; at small batches the GPU waits
on the CPU issuing them. A CUDA graph records them once per input shape and replays them with
one launch, so batches are served in fixed sizes (buckets): powers of two up to
``max_batch``, and ``max_batch`` itself. A batch of n rows runs in the smallest bucket that
holds it, padded with zero rows, and the first n output rows are returned. Rows are
independent in eval mode (BatchNorm folded into the convolutions, no batch statistics), so
the padding changes nothing but the work done.

``cuda_graphs``: ``auto`` (graphs on CUDA; a bucket whose capture fails runs eagerly, warned
once), ``on`` (a capture failure is an error), ``off`` (eager, unpadded). On a CPU device,
where graphs are impossible, ``auto`` runs the same buckets eagerly (how CI covers the
padding) and ``on`` is refused. The speed gain of graphs is unmeasured: ``bench/gpu.py``
step 2 measures it on a GPU machine.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from inference.engines.wav2lip_backend_base import Backend, fold_batchnorm, to_channels_last
from inference.engines.wav2lip_model import FACE_SIZE, MEL_BANDS, MEL_STEPS, Wav2Lip

log = logging.getLogger(__name__)

GRAPH_MODES = ("auto", "on", "off")
"""Values of ``--cuda-graphs`` / ``EngineConfig.cuda_graphs``."""
WARMUP_PASSES = 3
"""Eager passes before a capture: cuDNN picks its kernels and lazy state is made then, not
inside the graph (torch's documented recipe)."""


def bucket_sizes(max_batch: int) -> tuple[int, ...]:
    """1, 2, 4, ... below ``max_batch``, then ``max_batch`` itself (a power of two or not)."""
    sizes: list[int] = []
    size = 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    sizes.append(max(1, max_batch))
    return tuple(sizes)


def bucket_for(rows: int, buckets: Sequence[int]) -> int:
    """The smallest bucket holding ``rows`` (1 <= rows <= the largest bucket)."""
    for size in buckets:
        if size >= rows:
            return size
    raise ValueError(f"{rows} rows do not fit the largest bucket {buckets[-1]}")


def fill(static: torch.Tensor, rows: torch.Tensor) -> None:
    """Copy ``rows`` into the first rows of ``static`` (casting, keeping its memory layout)
    and zero the rest: the padding every bucketed run uses, graph or eager."""
    static[: len(rows)].copy_(rows)
    static[len(rows) :].zero_()


def graphs_wanted(mode: str, device: str) -> bool:
    """Whether ``mode`` asks for CUDA graphs on ``device``; ValueError when it cannot be met."""
    if mode not in GRAPH_MODES:
        raise ValueError(f"cuda_graphs={mode!r}: use one of {', '.join(GRAPH_MODES)}")
    if mode == "off":
        return False
    if not device.startswith("cuda"):
        if mode == "on":
            raise ValueError(
                f"cuda_graphs='on' needs a CUDA device, got {device!r}: use cuda_graphs auto "
                "or off (--cuda-graphs)"
            )
        return False
    return True


def _inputs(size: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeroed fp16 (mel, face) of ``size`` rows, face channels_last: what the model reads."""
    mel = torch.zeros((size, 1, MEL_BANDS, MEL_STEPS), dtype=torch.float16, device=device)
    face = torch.zeros(
        (size, 6, FACE_SIZE, FACE_SIZE), dtype=torch.float16, device=device
    ).contiguous(memory_format=torch.channels_last)
    return mel, face


class GraphBucket:
    """One bucket's CUDA graph: static input and output tensors and the recorded pass.

    Built under ``torch.inference_mode`` (so are the static tensors, which only inference
    code may then write). Capture raises whatever CUDA raises; the backend decides.
    """

    def __init__(
        self, model: Wav2Lip, size: int, device: str, stream: torch.cuda.Stream | None
    ) -> None:
        self.size = size
        self.mel, self.face = _inputs(size, device)
        stream = stream if stream is not None else torch.cuda.Stream(device=device)
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_PASSES):
                model(self.mel, self.face)
        stream.wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: another engine's thread touching CUDA during the capture is not an
        # error of ours; only this thread's own unsafe calls abort it.
        with torch.cuda.graph(self.graph, stream=stream, capture_error_mode="thread_local"):
            self.out: torch.Tensor = model(self.mel, self.face)
        self._done: torch.cuda.Event | None = None

    def replay(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """The model on ``mel``/``face`` (n <= size rows, any float dtype) on the current
        stream, as a new float32 tensor of n rows."""
        stream = torch.cuda.current_stream(self.mel.device)
        if self._done is not None:
            # The last use may have been on another stream: its reads of the static tensors
            # must finish before this call overwrites them.
            stream.wait_event(self._done)
        fill(self.mel, mel)
        fill(self.face, face)
        self.graph.replay()
        # The conversion is a copy, queued before any later replay can overwrite self.out:
        # the caller may keep the result as long as it likes.
        out = self.out[: len(mel)].float().contiguous()
        self._done = torch.cuda.Event()
        self._done.record(stream)
        return out


class CudaBackend(Backend):
    """fp16, BatchNorm folded, channels_last; on CUDA pinned host buffers and async copies on
    a private stream, batches served in buckets replayed from CUDA graphs (``cuda_graphs``).

    With ``device="cpu"`` (tests: everything but the transfers and graphs) the same code runs
    on plain tensors with no stream. Not run on a GPU yet (none here): tests/test_wav2lip_cuda.py
    checks it when one is there.
    """

    name = "cuda"

    def __init__(
        self, model: Wav2Lip, device: str, max_batch: int, cuda_graphs: str = "auto"
    ) -> None:
        self.device = device
        self._cuda = device.startswith("cuda")
        self._max_batch = max(1, max_batch)
        self._mode = cuda_graphs
        self._graphs = graphs_wanted(cuda_graphs, device)
        self.buckets = bucket_sizes(self._max_batch) if cuda_graphs != "off" else ()
        self._captured: dict[int, GraphBucket] = {}
        self._eager_buckets: set[int] = set()
        self._warned = False
        self._model = to_channels_last(fold_batchnorm(model).to(device).half())
        self._stream = torch.cuda.Stream(device=device) if self._cuda else None
        # Pinned (page-locked) buffers make the host<->device copies truly asynchronous.
        shapes = {"mel": (1, MEL_BANDS, MEL_STEPS), "face": (6, FACE_SIZE, FACE_SIZE)}
        shapes["out"] = (3, FACE_SIZE, FACE_SIZE)
        self._host = {
            key: torch.empty((self._max_batch, *shape), dtype=torch.float32)
            for key, shape in shapes.items()
        }
        if self._cuda:
            self._host = {key: buffer.pin_memory() for key, buffer in self._host.items()}
            # The weight casts above were queued on the default stream; ours must not read
            # the weights before they finish.
            torch.cuda.synchronize(device)

    def run(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        parts = [
            self._run_chunk(mel[i : i + self._max_batch], face[i : i + self._max_batch])
            for i in range(0, len(mel), self._max_batch)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, 3, 96, 96), np.float32)

    def _run_chunk(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        b = len(mel)
        mel_h, face_h, out_h = (self._host[key][:b] for key in ("mel", "face", "out"))
        mel_h.copy_(torch.from_numpy(mel))
        face_h.copy_(torch.from_numpy(face))
        with self._on_stream(), torch.inference_mode():
            mel_d = mel_h.to(self.device, non_blocking=True)
            face_d = face_h.to(self.device, non_blocking=True)
            out_h.copy_(self._forward(mel_d, face_d), non_blocking=True)
        if self._stream is not None:
            # One sync per batch: the host buffers are reused by the next call.
            self._stream.synchronize()
        return out_h.numpy().copy()

    def run_tensors(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """fp16 on device tensors, on the caller's stream (the weights were made ready in
        the constructor), float32 out: no host copy, no synchronisation."""
        step = self._max_batch
        with torch.inference_mode():
            parts = [
                self._forward(mel[i : i + step], face[i : i + step])
                for i in range(0, len(mel), step)
            ]
        if not parts:
            return torch.zeros((0, 3, FACE_SIZE, FACE_SIZE), device=mel.device)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def graphs_state(self) -> dict[str, object]:
        """The ``cuda_graphs`` mode, whether graphs are used here, the buckets, those
        captured so far and those that run eagerly after a failed capture."""
        return {
            "mode": self._mode,
            "graphs": self._graphs,
            "buckets": list(self.buckets),
            "captured": sorted(self._captured),
            "eager": sorted(self._eager_buckets),
        }

    def _forward(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """float32 (n, 3, 96, 96) for n <= max_batch rows on the device, on the current stream."""
        if len(mel) == 0:
            return torch.zeros((0, 3, FACE_SIZE, FACE_SIZE), device=mel.device)
        if not self.buckets:
            face_h = face.half().contiguous(memory_format=torch.channels_last)
            out: torch.Tensor = self._model(mel.half(), face_h)
            return out.float().contiguous()
        size = bucket_for(len(mel), self.buckets)
        graph = self._graph(size)
        if graph is not None:
            return graph.replay(mel, face)
        mel_p, face_p = _inputs(size, self.device)
        fill(mel_p, mel)
        fill(face_p, face)
        padded: torch.Tensor = self._model(mel_p, face_p)
        return padded[: len(mel)].float().contiguous()

    def _graph(self, size: int) -> GraphBucket | None:
        """The bucket's graph, captured on first use; None where it runs eagerly."""
        if not self._graphs or size in self._eager_buckets:
            return None
        graph = self._captured.get(size)
        if graph is not None:
            return graph
        try:
            graph = GraphBucket(self._model, size, self.device, self._stream)
        except RuntimeError as e:  # torch's CUDA errors (AcceleratorError is one)
            if self._mode == "on":
                raise RuntimeError(
                    f"cuda_graphs='on': capturing the batch-{size} graph failed ({e}); "
                    "use --cuda-graphs auto (falls back to eager) or off"
                ) from e
            if not self._warned:
                log.warning("cuda: CUDA graph capture failed (%s); batch %d runs eagerly", e, size)
                self._warned = True
            self._eager_buckets.add(size)
            return None
        self._captured[size] = graph
        log.info("cuda: captured the CUDA graph of batch bucket %d", size)
        return graph

    def _on_stream(self) -> AbstractContextManager[object]:
        return torch.cuda.stream(self._stream) if self._stream is not None else nullcontext()
