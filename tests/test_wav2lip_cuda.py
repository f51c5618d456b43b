"""The ``cuda`` backend and the device path on a real GPU; skipped without one.

``python bench/gpu.py`` runs this module on the GPU machine (``pytest --noconftest``: that
machine lacks aiortc and av, which tests/conftest.py imports; nothing here needs them).

Bounds. fp16 against fp32 was measured only on CPU (``CudaBackend(model, "cpu")``, the same
random-weight checkpoints and drawn faces, see tests/test_wav2lip_cuda_backend.py): max abs
0.0075-0.0089, mean 0.00076-0.0012 on the [0, 1] output. cuDNN accumulates fp16 convolutions
in fp32 too, but picks other kernels and summation orders, so the GPU bound is
``TOLERANCES["cuda"]``, about 5x the CPU max and 4x its mean. Two fp16 runs whose kernels
differ (a batch of 3 alone, or padded to the 4-bucket) may differ by as much as each differs
from fp32: ``FP16_PAIR``; the same shapes replayed from a graph run the very kernels eager
chose, so there ``SAME_KERNELS`` (one fp16 step near 1.0 is 0.0005).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.gpu import astronaut_frame, host_i420, plane_diffs, speech
from inference.engines.wav2lip import Wav2LipEngine
from inference.engines.wav2lip_backends import TOLERANCES, create_backend
from inference.engines.wav2lip_cuda import CudaBackend
from inference.engines.wav2lip_model import Wav2Lip
from inference.engines.wav2lip_synthetic import random_checkpoint
from tests.test_wav2lip_model import sample_inputs

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU (torch sees none); bench/gpu.py runs it on the GPU machine",
)

FP16_PAIR = (0.02, 0.0025)
SAME_KERNELS = 1e-3


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Wav2Lip:
    """One random-weight checkpoint, saved and loaded like a user's file."""
    return random_checkpoint(tmp_path_factory.mktemp("cuda"), seed=0)


def _diff(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> tuple[float, float]:
    x = a.cpu().numpy() if isinstance(a, torch.Tensor) else a
    y = b.cpu().numpy() if isinstance(b, torch.Tensor) else b
    d = np.abs(x.astype(np.float64) - y)
    return float(d.max()), float(d.mean())


def test_fp16_on_cuda_matches_fp32_on_cpu(model: Wav2Lip) -> None:
    reference = create_backend("torch", model)
    emulated = CudaBackend(model, "cpu", 16)
    for graphs in ("off", "on"):
        cuda = CudaBackend(model, "cuda", 16, cuda_graphs=graphs)
        for seed in (21, 5):
            mel, face = sample_inputs(16, seed=seed)
            want = reference.run(mel, face)
            most, mean = _diff(cuda.run(mel, face), want)
            cpu = _diff(emulated.run(mel, face), want)
            print(f"graphs {graphs} seed {seed}: cuda fp16 vs fp32 max {most:.5f} mean "
                  f"{mean:.6f}; CPU fp16 max {cpu[0]:.5f} mean {cpu[1]:.6f}")  # fmt: skip
            assert most <= TOLERANCES["cuda"][0] and mean <= TOLERANCES["cuda"][1]


def test_graph_replay_matches_eager(model: Wav2Lip) -> None:
    eager = CudaBackend(model, "cuda", 8, cuda_graphs="off")
    graphs = CudaBackend(model, "cuda", 8, cuda_graphs="on")
    for n in (1, 3, 4, 8, 5):
        mel, face = (torch.from_numpy(a).cuda() for a in sample_inputs(n, seed=n))
        with torch.inference_mode():
            want, got = eager.run_tensors(mel, face), graphs.run_tensors(mel, face)
        most, mean = _diff(got, want)
        print(f"graph vs eager, {n} rows: max {most:.6f} mean {mean:.7f}")
        bound = SAME_KERNELS if n in graphs.buckets else FP16_PAIR[0]
        assert got.shape == (n, 3, 96, 96) and most <= bound
    assert graphs.graphs_state()["captured"] == [1, 4, 8]
    assert graphs.graphs_state()["eager"] == []


def test_a_replay_result_outlives_the_next_replay(model: Wav2Lip) -> None:
    """The result is a copy: the next replay of the bucket overwrites the static output."""
    eager = CudaBackend(model, "cuda", 4, cuda_graphs="off")
    graphs = CudaBackend(model, "cuda", 4, cuda_graphs="on")
    first, second = (
        tuple(torch.from_numpy(a).cuda() for a in sample_inputs(4, seed=s)) for s in (1, 2)
    )
    with torch.inference_mode():
        kept = graphs.run_tensors(*first)
        graphs.run_tensors(*second)
        torch.cuda.synchronize()
        assert _diff(kept, eager.run_tensors(*first))[0] <= SAME_KERNELS


def test_pinned_async_run_equals_sync_device_run(model: Wav2Lip) -> None:
    """run(): pinned buffers, non-blocking copies on the backend's stream; run_tensors on
    tensors copied synchronously: the same bytes, batch after batch (buffers reused)."""
    for graphs in ("off", "on"):
        cuda = CudaBackend(model, "cuda", 4, cuda_graphs=graphs)
        for seed in (1, 2, 3):
            mel, face = sample_inputs(3 + seed % 2, seed=seed)  # 4, 3, 4 rows
            pinned = cuda.run(mel, face)
            with torch.inference_mode():
                sync = cuda.run_tensors(torch.from_numpy(mel).cuda(), torch.from_numpy(face).cuda())
            np.testing.assert_array_equal(pinned, sync.cpu().numpy())
        assert cuda.run(mel[:0], face[:0]).shape == (0, 3, 96, 96)


def test_the_device_path_matches_the_host_path_with_the_same_backend(model: Wav2Lip) -> None:
    cuda = create_backend("cuda", model, "cuda", max_batch=4)  # cuda_graphs auto
    host = Wav2LipEngine(cuda, max_batch=4, device_path=False)
    device = Wav2LipEngine(cuda, max_batch=4, device_path=True)
    frame = astronaut_frame()
    requests = speech(frame, 7, seed=3)  # calls of 4 and 3 rows, both in the 4-bucket
    diffs = plane_diffs(host_i420(host, requests), device.infer_i420(requests))
    print(f"device vs host path, same cuda backend, (max, mean) grey levels: {diffs}")
    assert all(most <= 1 for most, _ in diffs.values()), diffs
    state = device.describe()["cuda_graphs"]
    assert isinstance(state, dict) and state["captured"] == [4], state
