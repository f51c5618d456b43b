"""The ``cuda`` backend's code on CPU (everything but the transfers and the graphs) and its
batch buckets; tests/test_wav2lip_cuda.py checks the same on a GPU when there is one.

fp16 on CPU convolutions against fp32, the shared random-weight model, seeds 0 and 1, drawn
faces (seeds 21 and 5), batches of 5, outputs in [0, 1]: max abs 0.0075-0.0089, mean
0.00076-0.0012. :data:`CPU_FP16` allows about twice that.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np
import pytest
import torch

from inference.engines import wav2lip_cuda
from inference.engines.wav2lip import Wav2LipEngine
from inference.engines.wav2lip_backends import create_backend
from inference.engines.wav2lip_cuda import (
    CudaBackend,
    bucket_for,
    bucket_sizes,
    fill,
    graphs_wanted,
)
from tests.test_wav2lip_model import run_torch, sample_inputs, synthetic_model

CPU_FP16 = (0.02, 0.0025)
"""(max, mean) abs difference allowed between fp16 and fp32 on CPU (measured: see above)."""


@pytest.fixture(scope="module")
def backend() -> CudaBackend:
    """auto on CPU: eager, in buckets 1, 2, 4."""
    return CudaBackend(synthetic_model(), "cpu", max_batch=4)


@pytest.fixture(scope="module")
def inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mel, face = sample_inputs(5, seed=21)
    return mel, face, run_torch(synthetic_model(), mel, face)


def test_buckets_are_powers_of_two_and_the_limit() -> None:
    assert bucket_sizes(16) == (1, 2, 4, 8, 16)
    assert bucket_sizes(12) == (1, 2, 4, 8, 12)
    assert bucket_sizes(1) == (1,)
    assert [bucket_for(n, bucket_sizes(12)) for n in (1, 2, 3, 5, 8, 9, 12)] == [
        1, 2, 4, 8, 8, 12, 12,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="largest bucket"):
        bucket_for(13, bucket_sizes(12))


def test_fill_pads_with_zeros_and_casts() -> None:
    static = torch.full((4, 2), 7.0, dtype=torch.float16)
    fill(static, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert static.tolist() == [[1, 2], [3, 4], [0, 0], [0, 0]]


def test_graph_modes() -> None:
    assert graphs_wanted("auto", "cuda:1") and graphs_wanted("on", "cuda")
    assert not graphs_wanted("off", "cuda") and not graphs_wanted("auto", "cpu")
    with pytest.raises(ValueError, match="cuda_graphs='on' needs a CUDA device"):
        graphs_wanted("on", "cpu")
    with pytest.raises(ValueError, match="auto, on, off"):
        graphs_wanted("yes", "cuda")
    with pytest.raises(ValueError, match="--cuda-graphs"):
        CudaBackend(synthetic_model(), "cpu", 2, cuda_graphs="on")


def test_run_matches_fp32_in_chunks(
    backend: CudaBackend, inputs: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    mel, face, expected = inputs
    out = backend.run(mel, face)  # 5 rows, max_batch 4: chunks of 4 and 1
    assert out.shape == expected.shape and out.dtype == np.float32
    diff = np.abs(out - expected)
    logging.getLogger(__name__).info("fp16 on CPU: max %.5f mean %.6f", diff.max(), diff.mean())
    assert diff.max() <= CPU_FP16[0] and diff.mean() <= CPU_FP16[1], (diff.max(), diff.mean())
    # The device-tensor entry point runs the same code: the same bytes.
    tensors = backend.run_tensors(torch.from_numpy(mel), torch.from_numpy(face))
    assert tensors.dtype == torch.float32 and tensors.is_contiguous()
    np.testing.assert_array_equal(tensors.numpy(), out)


def test_empty_batches(backend: CudaBackend) -> None:
    mel, face = np.zeros((0, 1, 80, 16), np.float32), np.zeros((0, 6, 96, 96), np.float32)
    assert backend.run(mel, face).shape == (0, 3, 96, 96)
    out = backend.run_tensors(torch.from_numpy(mel), torch.from_numpy(face))
    assert out.shape == (0, 3, 96, 96) and out.dtype == torch.float32


def test_bucketed_equals_unbucketed_row_for_row(backend: CudaBackend) -> None:
    """3 rows padded to the 4-bucket against 3 rows as they are. BatchNorm is folded into
    the convolutions and nothing else mixes rows, so each output row depends on its own
    input row alone: the padding may only cost work (measured: identical bytes)."""
    plain = CudaBackend(synthetic_model(), "cpu", max_batch=4, cuda_graphs="off")
    assert plain.buckets == () and backend.buckets == (1, 2, 4)
    mel, face = (torch.from_numpy(a) for a in sample_inputs(3, seed=5))
    padded, unpadded = backend.run_tensors(mel, face), plain.run_tensors(mel, face)
    np.testing.assert_allclose(padded.numpy(), unpadded.numpy(), rtol=0, atol=1e-6)
    state = backend.graphs_state()
    assert state == {
        "mode": "auto", "graphs": False, "buckets": [1, 2, 4], "captured": [], "eager": [],
    }  # fmt: skip


class FakeGraph:
    """Stands in for a captured bucket on CPU: replays the model eagerly, counts captures."""

    made: ClassVar[list[int]] = []

    def __init__(self, model: torch.nn.Module, size: int, device: str, stream: object) -> None:
        self.model, self.size = model, size
        FakeGraph.made.append(size)

    def replay(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        mel_p, face_p = wav2lip_cuda._inputs(self.size, "cpu")
        fill(mel_p, mel)
        fill(face_p, face)
        out: torch.Tensor = self.model(mel_p, face_p)
        return out[: len(mel)].float()


class FailingGraph:
    def __init__(self, *args: object) -> None:
        raise RuntimeError("operation not permitted when stream is capturing")


def _graphing(mode: str) -> CudaBackend:
    backend = CudaBackend(synthetic_model(), "cpu", max_batch=2, cuda_graphs="off")
    # As if on CUDA: the mode and buckets a GPU would have (graphs themselves are faked).
    backend._mode, backend._graphs, backend.buckets = mode, True, bucket_sizes(2)
    return backend


def test_graphs_are_captured_once_per_bucket_on_first_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wav2lip_cuda, "GraphBucket", FakeGraph)
    FakeGraph.made = []
    backend = _graphing("auto")
    mel, face = sample_inputs(1, seed=3)
    backend.run(mel, face)
    backend.run(mel, face)
    assert FakeGraph.made == [1]
    backend.run(*sample_inputs(2, seed=4))
    assert FakeGraph.made == [1, 2] and backend.graphs_state()["captured"] == [1, 2]


def test_a_failed_capture_falls_back_or_fails_by_mode(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(wav2lip_cuda, "GraphBucket", FailingGraph)
    mel, face = sample_inputs(2, seed=6)
    auto = _graphing("auto")
    with caplog.at_level(logging.WARNING, "inference.engines.wav2lip_cuda"):
        first = auto.run(mel, face)
        auto.run(mel[:1], face[:1])
    assert caplog.text.count("capture failed") == 1  # warned once, not per bucket or call
    assert auto.graphs_state()["eager"] == [1, 2] and auto.graphs_state()["captured"] == []
    plain = CudaBackend(synthetic_model(), "cpu", max_batch=2, cuda_graphs="off")
    np.testing.assert_allclose(first, plain.run(mel, face), rtol=0, atol=1e-6)
    with pytest.raises(RuntimeError, match=r"cuda_graphs='on'.*auto"):
        _graphing("on").run(mel, face)


def test_the_engine_reports_and_warms_its_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wav2lip_cuda, "GraphBucket", FakeGraph)
    FakeGraph.made = []
    backend = _graphing("auto")
    engine = Wav2LipEngine(backend, max_batch=2, device_path=False)
    engine.warmup()
    assert FakeGraph.made == [1, 2]
    assert engine.describe()["cuda_graphs"] == backend.graphs_state()
    assert (
        Wav2LipEngine(create_backend("torch", synthetic_model())).describe()["cuda_graphs"] is None
    )
