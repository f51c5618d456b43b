"""Checkpoint formats, refusals, the file search, and an independent check of the layout."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from inference.engines.wav2lip_loader import (
    CHECKPOINT_NAMES,
    find_checkpoint,
    load_wav2lip,
    read_state_dict,
)
from inference.engines.wav2lip_model import Wav2Lip
from tests.test_wav2lip_model import run_torch, sample_inputs, synthetic_model

# Building the TorchScript fixtures uses torch.jit, deprecated in recent torch.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The synthetic model saved in every accepted format."""
    root = tmp_path_factory.mktemp("ckpt")
    model = synthetic_model()
    state = model.state_dict()
    out = {
        "torchscript": root / "Wav2Lip-SD-GAN.pt",
        "legacy": root / "wav2lip_gan.pth",
        "legacy-module": root / "wav2lip_module.pth",
        "legacy-old-serialization": root / "wav2lip_old.pth",
        "bare": root / "bare.pth",
    }
    torch.jit.save(torch.jit.script(model), str(out["torchscript"]))
    legacy = {"state_dict": state, "optimizer": {}, "global_step": 1000, "global_epoch": 3}
    torch.save(legacy, out["legacy"])
    module = {**legacy, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(module, out["legacy-module"])
    torch.save(legacy, out["legacy-old-serialization"], _use_new_zipfile_serialization=False)
    torch.save(dict(state), out["bare"])
    return out


@pytest.mark.parametrize(
    "kind", ["torchscript", "legacy", "legacy-module", "legacy-old-serialization", "bare"]
)
def test_every_format_gives_identical_outputs(files: dict[str, Path], kind: str) -> None:
    mel, face = sample_inputs(2)
    expected = run_torch(synthetic_model(), mel, face)
    loaded = load_wav2lip(files[kind])
    assert not loaded.training
    np.testing.assert_array_equal(run_torch(loaded, mel, face), expected)


def test_format_names_and_module_prefix_stripping(files: dict[str, Path]) -> None:
    state, fmt = read_state_dict(files["torchscript"])
    assert fmt == "TorchScript archive"
    state, fmt = read_state_dict(files["legacy-module"])
    assert fmt == "legacy training checkpoint"
    assert not any(k.startswith("module.") for k in state)
    assert set(state) == set(Wav2Lip().state_dict())
    _, fmt = read_state_dict(files["bare"])
    assert fmt == "bare state_dict"


def _refusal(path: Path) -> str:
    with pytest.raises(ValueError) as info:
        load_wav2lip(path)
    message = str(info.value)
    assert str(path) in message
    assert "expected a Wav2Lip 96x96 generator" in message
    return message


def test_refuses_a_larger_generator(tmp_path: Path) -> None:
    state = dict(synthetic_model().state_dict())
    # A 256 px style model: one more down/up block and a wider first conv.
    state["face_encoder_blocks.7.0.conv_block.0.weight"] = torch.zeros(512, 512, 3, 3)
    state["face_decoder_blocks.7.0.conv_block.0.weight"] = torch.zeros(512, 512, 3, 3)
    state["face_encoder_blocks.0.0.conv_block.0.weight"] = torch.zeros(32, 6, 7, 7)
    path = tmp_path / "wav2lip256.pth"
    torch.save({"state_dict": state}, path)
    message = _refusal(path)
    assert "another size" in message
    assert "8 face encoder / 8 decoder blocks" in message
    assert "(32, 6, 7, 7) instead of (16, 6, 7, 7)" in message


def test_refuses_same_blocks_with_other_shapes(tmp_path: Path) -> None:
    state = dict(synthetic_model().state_dict())
    state["output_block.1.weight"] = torch.zeros(3, 64, 1, 1)
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    assert "output_block.1.weight: (3, 64, 1, 1) instead of (3, 32, 1, 1)" in _refusal(path)


def test_refuses_syncnet_and_discriminator(tmp_path: Path) -> None:
    w = torch.zeros(1)
    syncnet = {
        "face_encoder.0.conv_block.0.weight": w,
        "audio_encoder.0.conv_block.0.weight": w,
    }
    torch.save({"state_dict": syncnet, "global_step": 1}, tmp_path / "lipsync_expert.pth")
    assert "SyncNet" in _refusal(tmp_path / "lipsync_expert.pth")
    disc = {"face_encoder_blocks.0.0.conv_block.0.weight": w, "binary_pred.0.weight": w}
    torch.save({"state_dict": disc}, tmp_path / "visual_quality_disc.pth")
    assert "discriminator" in _refusal(tmp_path / "visual_quality_disc.pth")


def test_refuses_damaged_and_foreign_files(tmp_path: Path, files: dict[str, Path]) -> None:
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(files["legacy"].read_bytes()[:200_000])
    assert "truncated or corrupt" in _refusal(truncated)
    truncated_ts = tmp_path / "truncated.pt"
    truncated_ts.write_bytes(files["torchscript"].read_bytes()[:200_000])
    assert "truncated or corrupt" in _refusal(truncated_ts)
    noise = tmp_path / "noise.pth"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert "unknown or corrupt file" in _refusal(noise)
    html = tmp_path / "download.pth"
    html.write_text("<!DOCTYPE html><html><body>Sign in</body></html>")
    assert "HTML page" in _refusal(html)
    lfs = tmp_path / "lfs.pth"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")
    assert "Git LFS pointer" in _refusal(lfs)
    assert "does not exist" in _refusal(tmp_path / "absent.pth")


def test_refuses_dicts_without_generator_weights(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"model": {"a": 1}, "epoch": 2}, path)
    assert "keys [epoch, model]" in _refusal(path)
    scripted = tmp_path / "linear.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(scripted))
    assert "a different network" in _refusal(scripted)


def test_python_objects_need_allow_pickle(tmp_path: Path, files: dict[str, Path]) -> None:
    state = synthetic_model().state_dict()
    path = tmp_path / "numpy_step.pth"
    torch.save({"state_dict": state, "global_step": np.int64(5)}, path)
    assert "allow_pickle=True" in _refusal(path)
    mel, face = sample_inputs(1)
    loaded = load_wav2lip(path, allow_pickle=True)
    np.testing.assert_array_equal(
        run_torch(loaded, mel, face), run_torch(synthetic_model(), mel, face)
    )


def test_missing_batchnorm_counters_are_tolerated(tmp_path: Path) -> None:
    state = {k: v for k, v in synthetic_model().state_dict().items() if "num_batches" not in k}
    path = tmp_path / "old_torch.pth"
    torch.save({"state_dict": state}, path)
    load_wav2lip(path)


def test_find_checkpoint_by_usual_names(tmp_path: Path) -> None:
    assert find_checkpoint(tmp_path / "nowhere", "gan") is None
    assert find_checkpoint(tmp_path, "gan") is None
    (tmp_path / "wav2lip_gan.pth").write_bytes(b"x")
    (tmp_path / "WAV2LIP.PTH").write_bytes(b"x")
    assert find_checkpoint(tmp_path, "gan") == tmp_path / "wav2lip_gan.pth"
    assert find_checkpoint(tmp_path, "nogan") == tmp_path / "WAV2LIP.PTH"  # case-insensitive
    (tmp_path / "Wav2Lip-SD-GAN.pt").write_bytes(b"x")
    assert find_checkpoint(tmp_path, "gan") == tmp_path / "Wav2Lip-SD-GAN.pt"  # preferred
    assert CHECKPOINT_NAMES["nogan"] == ("Wav2Lip-SD-NOGAN.pt", "wav2lip.pth")


# --- An independent implementation of the official layout ------------------------------------
# Written from the layout table alone, deliberately unlike wav2lip_model.py: a flat list of
# layers keyed by hand, random weights made with numpy, and a functional forward pass.
# (kind, key, cin, cout, kernel, stride, padding, output_padding, residual)
_R = True
Layer = tuple[str, str, int, int, int, Any, int, int, bool]


def _layers() -> list[Layer]:
    face: list[list[tuple[Any, ...]]] = [
        [(6, 16, 7, 1, 3, False)],
        [(16, 32, 3, 2, 1, False), (32, 32, 3, 1, 1, _R), (32, 32, 3, 1, 1, _R)],
        [(32, 64, 3, 2, 1, False)] + [(64, 64, 3, 1, 1, _R)] * 3,
        [(64, 128, 3, 2, 1, False)] + [(128, 128, 3, 1, 1, _R)] * 2,
        [(128, 256, 3, 2, 1, False)] + [(256, 256, 3, 1, 1, _R)] * 2,
        [(256, 512, 3, 2, 1, False), (512, 512, 3, 1, 1, _R)],
        [(512, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False)],
    ]
    audio: list[tuple[Any, ...]] = (
        [(1, 32, 3, 1, 1, False)] + [(32, 32, 3, 1, 1, _R)] * 2
        + [(32, 64, 3, (3, 1), 1, False)] + [(64, 64, 3, 1, 1, _R)] * 2
        + [(64, 128, 3, 3, 1, False)] + [(128, 128, 3, 1, 1, _R)] * 2
        + [(128, 256, 3, (3, 2), 1, False), (256, 256, 3, 1, 1, _R)]
        + [(256, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False)]
    )  # fmt: skip
    decoder: list[list[tuple[Any, ...]]] = [
        [("c", 512, 512, 1, 1, 0, 0)],
        [("t", 1024, 512, 3, 1, 0, 0), ("r", 512)],
        [("t", 1024, 512, 3, 2, 1, 1), ("r", 512), ("r", 512)],
        [("t", 768, 384, 3, 2, 1, 1), ("r", 384), ("r", 384)],
        [("t", 512, 256, 3, 2, 1, 1), ("r", 256), ("r", 256)],
        [("t", 320, 128, 3, 2, 1, 1), ("r", 128), ("r", 128)],
        [("t", 160, 64, 3, 2, 1, 1), ("r", 64), ("r", 64)],
    ]
    out: list[Layer] = []
    for b, block in enumerate(face):
        for j, (ci, co, k, s, p, r) in enumerate(block):
            out.append(("conv", f"face_encoder_blocks.{b}.{j}", ci, co, k, s, p, 0, r))
    for j, (ci, co, k, s, p, r) in enumerate(audio):
        out.append(("conv", f"audio_encoder.{j}", ci, co, k, s, p, 0, r))
    for b, block in enumerate(decoder):
        for j, spec in enumerate(block):
            key = f"face_decoder_blocks.{b}.{j}"
            if spec[0] == "r":
                out.append(("conv", key, spec[1], spec[1], 3, 1, 1, 0, True))
            else:
                kind = "conv" if spec[0] == "c" else "convT"
                _, ci, co, k, s, p, op = spec
                out.append((kind, key, ci, co, k, s, p, op, False))
    out.append(("conv", "output_block.0", 80, 32, 3, 1, 1, 0, False))
    return out


def _independent_state(seed: int) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    state: dict[str, torch.Tensor] = {}

    def put(key: str, shape: tuple[int, ...], scale: float, offset: float = 0.0) -> None:
        values = offset + scale * rng.standard_normal(shape)
        state[key] = torch.from_numpy(values.astype(np.float32))

    for kind, key, ci, co, k, _s, _p, _op, _r in _layers():
        shape = (ci, co, k, k) if kind == "convT" else (co, ci, k, k)
        put(f"{key}.conv_block.0.weight", shape, (1.0 / (ci * k * k)) ** 0.5)
        put(f"{key}.conv_block.0.bias", (co,), 0.05)
        put(f"{key}.conv_block.1.weight", (co,), 0.1, 1.0)
        put(f"{key}.conv_block.1.bias", (co,), 0.1)
        put(f"{key}.conv_block.1.running_mean", (co,), 0.1)
        state[f"{key}.conv_block.1.running_var"] = torch.from_numpy(
            rng.uniform(0.5, 1.5, co).astype(np.float32)
        )
        state[f"{key}.conv_block.1.num_batches_tracked"] = torch.tensor(100)
    put("output_block.1.weight", (3, 32, 1, 1), 0.3)
    put("output_block.1.bias", (3,), 0.1)
    return state


def _independent_forward(
    state: dict[str, torch.Tensor], audio: torch.Tensor, face: torch.Tensor
) -> torch.Tensor:
    def layer(x: torch.Tensor, spec: Layer) -> torch.Tensor:
        kind, key, _ci, _co, _k, s, p, op, residual = spec
        w, b = state[f"{key}.conv_block.0.weight"], state[f"{key}.conv_block.0.bias"]
        if kind == "convT":
            y = F.conv_transpose2d(x, w, b, stride=s, padding=p, output_padding=op)
        else:
            y = F.conv2d(x, w, b, stride=s, padding=p)
        n = f"{key}.conv_block.1"
        y = F.batch_norm(
            y, state[f"{n}.running_mean"], state[f"{n}.running_var"],
            state[f"{n}.weight"], state[f"{n}.bias"], training=False, eps=1e-5,
        )  # fmt: skip
        return F.relu(y + x if residual else y)

    specs = _layers()
    x = audio
    for spec in (s for s in specs if s[1].startswith("audio_encoder.")):
        x = layer(x, spec)
    feats = []
    f = face
    for b in range(7):
        for spec in (s for s in specs if s[1].startswith(f"face_encoder_blocks.{b}.")):
            f = layer(f, spec)
        feats.append(f)
    for b in range(7):
        for spec in (s for s in specs if s[1].startswith(f"face_decoder_blocks.{b}.")):
            x = layer(x, spec)
        x = torch.cat([x, feats[6 - b]], dim=1)
    x = layer(x, specs[-1])
    x = F.conv2d(x, state["output_block.1.weight"], state["output_block.1.bias"])
    return torch.sigmoid(x)


def test_independent_implementation_gives_the_same_outputs(tmp_path: Path) -> None:
    state = _independent_state(seed=3)
    assert len(state) == 352
    assert sum(v.numel() for k, v in state.items() if "running" not in k and "num_b" not in k) == (
        36_298_035
    )
    path = tmp_path / "independent.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    mel, face = sample_inputs(2, seed=11)
    with torch.inference_mode():
        expected = _independent_forward(state, torch.from_numpy(mel), torch.from_numpy(face))
    out = run_torch(load_wav2lip(path), mel, face)
    assert expected.std() > 0.01  # not saturated, so the comparison means something
    assert np.abs(out - expected.numpy()).max() <= 1e-5


def test_logs_the_format(files: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="inference.engines.wav2lip_loader"):
        load_wav2lip(files["torchscript"])
    assert "TorchScript archive" in caplog.text
