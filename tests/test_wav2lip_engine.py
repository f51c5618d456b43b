"""The Wav2Lip engines: pre/post-processing, batching, factories, and every backend vs fp32."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from config import EngineConfig
from inference.engines.base import EngineUnavailable, create_engine
from inference.engines.wav2lip import Wav2LipEngine, Wav2LipGanEngine, locate_checkpoint
from inference.engines.wav2lip_backends import (
    TOLERANCES,
    Backend,
    OpenVinoBackend,
    backend_status,
    choose_backend,
    create_backend,
    resolve_device,
)
from inference.engines.wav2lip_synthetic import save_checkpoint
from inference.frames import AvatarFrame, Box, LipSyncRequest, MouthGeometry
from tests.test_wav2lip_model import run_torch, sample_inputs, synthetic_model

MOUTH = MouthGeometry(center_x=60, center_y=90, half_width=15, lip_height=6, chin_y=110)


class EchoReference(Backend):
    """Returns the reference channels (3-5) unchanged and remembers what it was given."""

    name = "echo"

    def __init__(self) -> None:
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    def run(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        self.calls.append((mel.copy(), face.copy()))
        return face[:, 3:6].copy()


def drawn_frame(seed: int = 0, size: tuple[int, int] = (160, 140)) -> AvatarFrame:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    return AvatarFrame(image=image, box=Box(20, 10, 110, 130), mouth=MOUTH)


def request(frame: AvatarFrame, seed: int = 0, silent: bool = False) -> LipSyncRequest:
    mel = np.random.default_rng(seed).uniform(-4, 4, (80, 16)).astype(np.float32)
    return LipSyncRequest(mel=mel, frame=frame, silent=silent)


@pytest.fixture(scope="module")
def torch_engine() -> Wav2LipEngine:
    return Wav2LipGanEngine(create_backend("torch", synthetic_model()), max_batch=2)


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("checkpoints")
    save_checkpoint(synthetic_model(), root / "wav2lip.pth")
    return root


def test_empty_input(torch_engine: Wav2LipEngine) -> None:
    assert torch_engine.infer([]) == []


def test_batched_equals_unbatched(torch_engine: Wav2LipEngine) -> None:
    frames = [drawn_frame(i) for i in range(3)]
    reqs = [request(frames[i % 3], seed=i) for i in range(5)]  # 3 backend calls of <= 2
    together = torch_engine.infer(reqs)
    alone = [torch_engine.infer([r])[0] for r in reqs]
    for a, b in zip(together, alone, strict=True):
        assert a.box == b.box
        # Convolutions sum in a batch-size-dependent order: ~1e-6 apart, which can round
        # a rare pixel to the neighbouring uint8 level.
        assert np.abs(a.image.astype(int) - b.image).max() <= 1


def test_patches_have_the_box_size_and_model_output(torch_engine: Wav2LipEngine) -> None:
    frame = drawn_frame(4)
    (patch,) = torch_engine.infer([request(frame)])
    assert patch.box == frame.box
    assert patch.image.shape == (frame.box.height, frame.box.width, 3)
    assert patch.image.dtype == np.uint8
    assert patch.alpha is None
    crop = frame.image[frame.box.y1 : frame.box.y2, frame.box.x1 : frame.box.x2]
    assert np.abs(patch.image.astype(int) - crop).mean() > 5  # the model did draw something


def test_silent_requests_skip_the_model() -> None:
    backend = EchoReference()
    engine = Wav2LipEngine(backend)
    frame = drawn_frame(1)
    patches = engine.infer([request(frame, silent=True), request(frame), request(frame, 2, True)])
    assert len(backend.calls) == 1 and backend.calls[0][0].shape == (1, 1, 80, 16)
    crop = frame.image[frame.box.y1 : frame.box.y2, frame.box.x1 : frame.box.x2]
    np.testing.assert_array_equal(patches[0].image, crop)
    np.testing.assert_array_equal(patches[2].image, crop)
    assert engine.infer([request(frame, silent=True)])[0].image is not frame.image
    assert len(backend.calls) == 1


def test_colour_order_and_masking_through_the_engine() -> None:
    backend = EchoReference()
    engine = Wav2LipEngine(backend, max_batch=4)
    image = np.zeros((120, 100, 3), np.uint8)
    image[..., 2] = 230  # BGR red
    image[..., 1] = 20
    frame = AvatarFrame(image=image, box=Box(10, 5, 90, 115), mouth=MOUTH)
    (patch,) = engine.infer([request(frame)])
    assert patch.image[..., 0].max() < 10  # blue stays low: no channel flip anywhere
    assert patch.image[..., 2].min() > 220
    _, face = backend.calls[0]
    assert face.shape == (1, 6, 96, 96) and face.dtype == np.float32
    assert face.max() <= 1.0
    np.testing.assert_allclose(face[0, 5], 230 / 255, atol=1e-6)  # reference red channel
    np.testing.assert_allclose(face[0, 3], 0.0)  # reference blue channel
    assert face[0, :3, 48:].max() == 0.0  # target lower half masked
    np.testing.assert_array_equal(face[0, :3, :48], face[0, 3:, :48])  # upper half kept


def test_splits_batches_and_caches_faces() -> None:
    backend = EchoReference()
    engine = Wav2LipEngine(backend, max_batch=3)
    frame = drawn_frame(2)
    engine.infer([request(frame, i) for i in range(7)])
    assert [len(c[0]) for c in backend.calls] == [3, 3, 1]
    assert len(engine._faces) == 1
    other = AvatarFrame(image=frame.image, box=Box(0, 0, 50, 60), mouth=MOUTH)
    engine.infer([request(other)])
    assert len(engine._faces) == 2


def test_rejects_bad_mel_and_empty_box() -> None:
    engine = Wav2LipEngine(EchoReference())
    frame = drawn_frame()
    bad = LipSyncRequest(mel=np.zeros((80, 15), np.float32), frame=frame, silent=False)
    with pytest.raises(ValueError, match="mel window"):
        engine.infer([bad])
    empty = AvatarFrame(image=frame.image, box=Box(5, 5, 5, 20), mouth=MOUTH)
    with pytest.raises(ValueError, match="face box"):
        engine.infer([request(empty)])


def test_missing_checkpoint_names_files_and_folder(tmp_path: Path) -> None:
    config = EngineConfig(checkpoints_dir=tmp_path)
    with pytest.raises(EngineUnavailable) as gan:
        create_engine("wav2lip-gan", config=config)
    assert "Wav2Lip-SD-GAN.pt" in str(gan.value) and "wav2lip_gan.pth" in str(gan.value)
    assert str(tmp_path) in str(gan.value)
    with pytest.raises(EngineUnavailable) as nogan:
        create_engine("wav2lip-nogan", config=config)
    assert "Wav2Lip-SD-NOGAN.pt" in str(nogan.value) and "wav2lip.pth" in str(nogan.value)
    with pytest.raises(EngineUnavailable, match="does not exist"):
        locate_checkpoint("gan", EngineConfig(gan_checkpoint=tmp_path / "x.pt"))


def test_wrong_file_makes_the_engine_unavailable(tmp_path: Path) -> None:
    (tmp_path / "wav2lip_gan.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(EngineUnavailable, match="expected a Wav2Lip 96x96 generator"):
        create_engine("wav2lip-gan", config=EngineConfig(checkpoints_dir=tmp_path))


def test_factory_loads_describes_warms_up(checkpoint_dir: Path) -> None:
    config = EngineConfig(
        checkpoints_dir=checkpoint_dir, device="cpu", backend="torch", max_batch=2
    )
    engine = create_engine("wav2lip-nogan", config=config)
    info = engine.describe()
    assert info["name"] == "wav2lip-nogan"
    assert info["checkpoint"] == str(checkpoint_dir / "wav2lip.pth")
    assert (info["device"], info["backend"], info["max_batch"]) == ("cpu", "torch", 2)
    engine.warmup()
    frame = drawn_frame(5)
    (patch,) = engine.infer([request(frame)])
    explicit = EngineConfig(
        gan_checkpoint=checkpoint_dir / "wav2lip.pth", device="cpu", backend="torch"
    )
    gan = create_engine("wav2lip-gan", config=explicit)
    assert gan.describe()["checkpoint"] == str(checkpoint_dir / "wav2lip.pth")
    np.testing.assert_array_equal(gan.infer([request(frame)])[0].image, patch.image)


def test_device_and_backend_choice() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    auto = choose_backend("auto", "cpu")
    assert auto != "openvino-int8" and backend_status(auto) is None
    assert choose_backend("torch", "cpu") == "torch"
    assert choose_backend("openvino", "cuda") == "cuda"
    with pytest.raises(EngineUnavailable, match="unknown backend"):
        choose_backend("tensorrt", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(EngineUnavailable, match="CUDA"):
            resolve_device("cuda")
        with pytest.raises(EngineUnavailable):
            choose_backend("cuda", "cpu")


# --- every backend against torch fp32 ----------------------------------------------------------


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mel, face = sample_inputs(4, seed=21)
    return mel, face, run_torch(synthetic_model(), mel, face)


@pytest.fixture(scope="module")
def ov_model() -> object:
    if backend_status("openvino") is not None:
        pytest.skip(backend_status("openvino") or "")
    from inference.engines.wav2lip_calibrate import convert

    return convert(synthetic_model())  # converted once, shared by every OpenVINO precision


def _check(name: str, backend: Backend, reference: tuple[np.ndarray, ...]) -> None:
    mel, face, expected = reference
    out = backend.run(mel, face)
    assert out.shape == expected.shape and out.dtype == np.float32
    diff = np.abs(out - expected)
    max_tol, mean_tol = TOLERANCES[name]
    assert diff.max() <= max_tol and diff.mean() <= mean_tol, (name, diff.max(), diff.mean())
    # Batched equals unbatched within the backend's own precision.
    first = backend.run(mel[:1], face[:1])
    assert np.abs(first - out[:1]).max() <= max(max_tol, 1e-5)


@pytest.mark.parametrize("name", ["torch", "torch-bf16", "cuda"])
def test_torch_backends_match_fp32(name: str, reference: tuple[np.ndarray, ...]) -> None:
    status = backend_status(name)
    if status is not None:
        pytest.skip(status)
    _check(name, create_backend(name, synthetic_model(), resolve_device("auto")), reference)


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_openvino_matches_fp32(
    precision: str, ov_model: object, reference: tuple[np.ndarray, ...]
) -> None:
    name = "openvino" if precision == "f32" else "openvino-bf16"
    status = backend_status(name)
    if status is not None:
        pytest.skip(status)
    _check(name, OpenVinoBackend(ov_model, precision), reference)


def test_openvino_int8_with_a_calibration_file(
    ov_model: object, reference: tuple[np.ndarray, ...], tmp_path: Path
) -> None:
    from inference.engines import wav2lip_calibrate as cal

    batches = [sample_inputs(6, seed=5), sample_inputs(6, seed=6)]
    ranges = cal.collect_ranges(ov_model, batches)
    path = tmp_path / "model.pt.int8.json"
    cal.save_ranges(ranges, path)
    assert cal.load_ranges(path) == ranges
    assert json.loads(path.read_text())["format"] == 1
    _check("openvino-int8", OpenVinoBackend(ov_model, "int8", path), reference)


def test_int8_ranges_that_do_not_fit_are_replaced(
    ov_model: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from inference.engines import wav2lip_calibrate as cal

    stale = tmp_path / "stale.int8.json"
    cal.save_ranges({"0:Convolution:1x1x1x1": (0.0, 1.0)}, stale)
    monkeypatch.setattr(cal, "synthetic_batches", lambda: [sample_inputs(2)])
    with caplog.at_level(logging.WARNING):
        ranges = cal.ranges_for(ov_model, stale)
    assert set(ranges) == set(cal.conv_keys(ov_model))
    assert "do not fit" in caplog.text and "synthetic" in caplog.text
    with pytest.raises(ValueError, match="not an int8 ranges file"):
        cal.load_ranges(tmp_path / "absent.json")


def test_int8_weights_get_7_bits_where_dot_products_saturate(
    ov_model: object, tmp_path: Path
) -> None:
    import openvino as ov

    from inference.engines import wav2lip_calibrate as cal

    avx2 = tmp_path / "avx2"
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n")
    vnni = tmp_path / "vnni"
    vnni.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert cal.int8_dot_saturates(avx2) and not cal.int8_dot_saturates(vnni)
    assert cal.int8_dot_saturates(tmp_path / "absent")

    assert isinstance(ov_model, ov.Model)
    ranges = cal.collect_ranges(ov_model, [sample_inputs(2, seed=5)])

    def weight_highs(bits: int) -> list[float]:
        q = cal.quantize(ov_model, ranges, weight_bits=bits)
        return [
            float(np.max(n.input_value(2).get_node().get_data()))
            for n in q.get_ops()
            if n.get_type_name() == "FakeQuantize"
            and n.get_output_element_type(0).is_real()
            and n.input_value(0).get_node().get_type_name() == "Constant"
        ]

    eight, seven = weight_highs(8), weight_highs(7)
    assert len(eight) == len(seven) > 40
    # The same 255-level nodes over a range 127/63 wider: a grid step of amax/63.
    np.testing.assert_allclose(np.array(seven) / np.array(eight), 127 / 63, rtol=1e-5)
    compiled = ov.Core().compile_model(cal.quantize(ov_model, ranges, weight_bits=7), "CPU")
    precisions = {
        n.get_rt_info()["runtimePrecision"].astype(str)
        for n in compiled.get_runtime_model().get_ops()
        if n.get_rt_info()["layerType"].astype(str) in ("Convolution", "Deconvolution")
    }
    assert precisions <= {"u8", "i8"}, precisions  # still int8 kernels, not emulated in f32
