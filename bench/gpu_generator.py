"""Step 2 of bench/gpu.py: the Wav2Lip generator alone on a CUDA device, per batch size.

Variants: fp32 as loaded; fp16 with BatchNorm folded (NCHW); the same in channels_last (what
the ``cuda`` backend runs); and that replayed from a CUDA graph captured once per batch size,
which is how fixed batch buckets would be served (one launch instead of ~200 kernels).
Timed with CUDA events around back-to-back calls on fixed device inputs: no host copies.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from functools import partial

import torch

from inference.engines.wav2lip_backends import fold_batchnorm
from inference.engines.wav2lip_model import Wav2Lip

Run = Callable[[], object]
VARIANTS = ("fp32", "fp16", "fp16 channels_last", "fp16 channels_last + CUDA graph")


def _prepared(model: Wav2Lip, variant: str, device: str) -> tuple[Wav2Lip, torch.dtype, bool]:
    """The module for ``variant`` on ``device``, its input dtype and whether channels_last."""
    if variant == "fp32":
        return copy.deepcopy(model).eval().to(device), torch.float32, False
    half = fold_batchnorm(model).to(device).half()
    if "channels_last" not in variant:
        return half, torch.float16, False
    return half.to(memory_format=torch.channels_last), torch.float16, True  # type: ignore[call-overload]


def _inputs(
    batch: int, device: str, dtype: torch.dtype, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator(device="cpu").manual_seed(batch)
    mel = (torch.rand((batch, 1, 80, 16), generator=generator) * 8 - 4).to(device, dtype)
    face = torch.rand((batch, 6, 96, 96), generator=generator).to(device, dtype)
    if channels_last:
        face = face.contiguous(memory_format=torch.channels_last)
    return mel, face


def _graphed(model: Wav2Lip, mel: torch.Tensor, face: torch.Tensor) -> Run:
    """A CUDA graph of one forward pass on these (static) inputs; replaying it is the run."""
    side = torch.cuda.Stream(device=mel.device)
    side.wait_stream(torch.cuda.current_stream(mel.device))
    with torch.cuda.stream(side):  # warm-up off the capture stream, as torch asks
        for _ in range(3):
            model(mel, face)
    torch.cuda.current_stream(mel.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        model(mel, face)
    return graph.replay


def _timed(run: Run, batch: int, seconds: float, min_iters: int, device: str) -> float:
    """Frames per second of back-to-back ``run`` calls, by CUDA events (warm)."""
    for _ in range(2):
        run()
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    iters = 0
    began = time.perf_counter()
    start.record()
    while iters < min_iters or time.perf_counter() - began < seconds:
        run()
        iters += 1
    end.record()
    end.synchronize()
    return iters * batch / (start.elapsed_time(end) / 1000.0)


def measure_generator(
    model: Wav2Lip, device: str, batches: Sequence[int], seconds: float, min_iters: int
) -> dict[str, dict[int, float]]:
    """Frames per second per variant and batch size."""
    results: dict[str, dict[int, float]] = {}
    for variant in VARIANTS:
        module, dtype, channels_last = _prepared(model, variant, device)
        results[variant] = {}
        for b in batches:
            with torch.no_grad():
                mel, face = _inputs(b, device, dtype, channels_last)
                run: Run = (
                    _graphed(module, mel, face)
                    if "graph" in variant
                    else partial(module, mel, face)
                )
                fps = _timed(run, b, seconds, min_iters, device)
            results[variant][b] = fps
            print(f"generator {variant:32s} b={b:<3d} {fps:9.1f} fps", flush=True)
            del run
            torch.cuda.empty_cache()  # a captured graph keeps its memory pool until now
        del module
    return results
