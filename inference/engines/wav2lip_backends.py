"""Ways to run the Wav2Lip generator on numpy batches, and the choice between them.

Every backend maps ``mel`` (B, 1, 80, 16) float32 and ``face`` (B, 6, 96, 96) float32 to
(B, 3, 96, 96) float32 in [0, 1], and must agree with ``torch`` (fp32, the reference) within
:data:`TOLERANCES` (max abs difference on that [0, 1] output; checked by the tests with random
weights, real weights were never available here).
"""

from __future__ import annotations

import logging
import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from inference.engines.base import EngineUnavailable
from inference.engines.wav2lip_backend_base import Backend, fold_batchnorm, to_channels_last
from inference.engines.wav2lip_cuda import CudaBackend
from inference.engines.wav2lip_model import Wav2Lip

if TYPE_CHECKING:
    import openvino as ov

    from inference.engines.wav2lip_calibrate import Ranges

log = logging.getLogger(__name__)

CPU_BACKENDS = ("torch", "torch-bf16", "openvino", "openvino-bf16", "openvino-int8")
"""Backends selectable with ``--backend`` on a CPU (plus ``auto``)."""

TOLERANCES: dict[str, tuple[float, float]] = {
    "torch": (0.0, 0.0),
    "openvino": (1e-4, 1e-5),
    "torch-bf16": (0.15, 0.015),
    "openvino-bf16": (0.15, 0.015),
    # fp16: on CPU (CudaBackend(model, "cpu")) measured max 0.009 / mean 0.0012; on a GPU
    # unmeasured (none here), so about 5x / 4x that until tests/test_wav2lip_cuda.py runs there.
    "cuda": (0.05, 0.005),
    "openvino-int8": (0.4, 0.03),  # rare pixels; judge real weights by eye
}
"""(max, mean) abs difference from ``torch`` fp32 allowed per backend, outputs in [0, 1]."""


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 in hardware (AVX512-BF16/AMX, or Arm BF16).

    Without it torch and OpenVINO emulate bf16, which is slower than fp32.
    """
    return _cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"} != set()


@cache
def _cpu_flags() -> frozenset[str]:
    if not sys.platform.startswith("linux"):
        return frozenset()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def openvino_status() -> str | None:
    """None when OpenVINO can run here, else why not (what to install)."""
    try:
        import openvino as ov
    except ImportError:
        return "OpenVINO is not installed: pip install 'talking-avatar[openvino]'"
    if "CPU" not in ov.Core().available_devices:
        return "OpenVINO has no CPU device here"
    return None


def backend_status(name: str) -> str | None:
    """None when backend ``name`` can run on this machine, else the reason it cannot."""
    if name == "torch":
        return None
    if name == "torch-bf16":
        if not torch.backends.mkldnn.is_available():
            return "torch-bf16 needs torch built with oneDNN (mkldnn)"
        if not cpu_has_native_bf16():
            return "this CPU has no native bf16 (avx512_bf16/amx_bf16); use torch or openvino"
        return None
    if name.startswith("openvino"):
        status = openvino_status()
        if status is None and name == "openvino-bf16" and not cpu_has_native_bf16():
            return "this CPU has no native bf16 (avx512_bf16/amx_bf16); use openvino (f32)"
        return status
    if name == "cuda":
        return None if torch.cuda.is_available() else "torch sees no CUDA device"
    return f"unknown backend {name!r}; known: auto, cuda, {', '.join(CPU_BACKENDS)}"


def resolve_device(requested: str) -> str:
    """Turn ``auto|cpu|cuda|cuda:N`` into a concrete device, or raise EngineUnavailable."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested == "cuda" or requested.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise EngineUnavailable(f"device {requested!r} requested but torch sees no CUDA GPU")
        return requested
    raise EngineUnavailable(f"unknown device {requested!r}; use auto, cpu or cuda[:N]")


def choose_backend(requested: str, device: str) -> str:
    """The backend to use for ``requested`` (a name or ``auto``) on a resolved ``device``.

    On CUDA the cuda backend is the only choice (``--backend`` names CPU backends). ``auto``
    on CPU takes the fastest one that works here; int8 is never chosen automatically
    because its quality must be checked by a person first.
    """
    if device.startswith("cuda"):
        if requested not in ("auto", "cuda"):
            log.info("device %s: ignoring CPU backend %r, using cuda", device, requested)
        return "cuda"
    if requested == "auto":
        for name in ("openvino-bf16", "openvino", "torch-bf16", "torch"):
            if backend_status(name) is None:
                return name
    if requested == "cuda":
        raise EngineUnavailable("backend 'cuda' needs --device cuda (or auto with a GPU)")
    status = backend_status(requested)
    if status is not None:
        raise EngineUnavailable(f"backend {requested!r} cannot run here: {status}")
    return requested


def create_backend(
    name: str,
    model: Wav2Lip,
    device: str = "cpu",
    *,
    max_batch: int = 32,
    int8_ranges: Path | Ranges | None = None,
    cuda_graphs: str = "auto",
) -> Backend:
    """Build backend ``name`` around ``model`` (never modified: backends that change it copy).

    ``int8_ranges``: ranges, or the JSON written by ``wav2lip_calibrate.calibrate``; without
    them the ``openvino-int8`` backend calibrates on synthetic inputs and says so in the log.
    ``cuda_graphs`` (auto|on|off): CUDA graph batch buckets of the ``cuda`` backend
    (:mod:`inference.engines.wav2lip_cuda`); the CPU backends have none and ignore it.
    """
    status = backend_status(name)
    if status is not None:
        raise EngineUnavailable(status)
    if name == "cuda":
        cuda = device if device.startswith("cuda") else "cuda"
        return CudaBackend(model, cuda, max_batch, cuda_graphs)
    if cuda_graphs == "on":
        log.warning("cuda_graphs='on' ignored: backend %s on %s runs no CUDA graphs", name, device)
    if name == "torch":
        return TorchBackend(model)
    if name == "torch-bf16":
        return TorchBf16Backend(model)
    precision = {"openvino": "f32", "openvino-bf16": "bf16", "openvino-int8": "int8"}[name]
    return OpenVinoBackend(model, precision, int8_ranges)


class TorchBackend(Backend):
    """fp32 eager torch: the reference every other backend is compared with."""

    name = "torch"

    def __init__(self, model: Wav2Lip) -> None:
        self._model = model.eval()

    def run(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self._model(torch.from_numpy(mel), torch.from_numpy(face))
        return np.ascontiguousarray(out.numpy(), dtype=np.float32)

    def run_tensors(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """The fp32 module on the tensors themselves: no host round trip."""
        out: torch.Tensor = self._model(mel, face)
        return out


class TorchBf16Backend(Backend):
    """bf16 autocast on CPU with channels_last (oneDNN's fast layout) and folded BatchNorm."""

    name = "torch-bf16"

    def __init__(self, model: Wav2Lip) -> None:
        self._model = to_channels_last(fold_batchnorm(model))

    def run(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.run_tensors(torch.from_numpy(mel), torch.from_numpy(face)).numpy()

    def run_tensors(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """bf16 autocast on the tensors, back to contiguous float32."""
        face_t = face.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = self._model(mel, face_t)
        return out.float().contiguous()


class OpenVinoBackend(Backend):
    """OpenVINO on CPU, converted in-process from the torch module (dynamic batch).

    ``source``: the torch generator, or an ``ov.Model`` already converted from it with
    ``wav2lip_calibrate.convert`` (conversion traces the model and takes seconds, so callers
    building several precisions convert once). ``precision``: ``f32``, ``bf16`` (inference
    precision hint) or ``int8`` (FakeQuantize from :mod:`inference.engines.wav2lip_calibrate`,
    everything else in f32).
    """

    def __init__(
        self,
        source: Wav2Lip | ov.Model,
        precision: str = "f32",
        int8_ranges: Path | Ranges | None = None,
    ) -> None:
        import openvino as ov

        from inference.engines import wav2lip_calibrate as cal

        self.name = {"f32": "openvino", "bf16": "openvino-bf16", "int8": "openvino-int8"}[precision]
        ov_model = cal.convert(source) if isinstance(source, Wav2Lip) else source
        if precision == "int8":
            ranges = (
                int8_ranges
                if isinstance(int8_ranges, dict)
                else cal.ranges_for(ov_model, int8_ranges)
            )
            ov_model = cal.quantize(ov_model, ranges)
        # Explicit hint: on bf16-capable CPUs OpenVINO would silently pick bf16 for "f32".
        hint = "bf16" if precision == "bf16" else "f32"
        config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        self._compiled = ov.Core().compile_model(ov_model, "CPU", config)
        self._request = self._compiled.create_infer_request()

    def run(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        result = self._request.infer(
            [np.ascontiguousarray(mel), np.ascontiguousarray(face)], share_inputs=True
        )
        return np.asarray(result[0], dtype=np.float32)
