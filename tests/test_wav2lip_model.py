"""The 96x96 generator: the published facts (size, keys, shapes) and basic invariants.

Also home of the synthetic model shared by the other Wav2Lip tests (``synthetic_model``, one
cached :func:`~inference.engines.wav2lip_synthetic.calibrated_random_model` per seed): random
weights whose BatchNorm statistics were measured on drawn faces, so outputs spread over [0, 1]
instead of sitting at 0.5, which makes the comparisons meaningful.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import torch
from torch import nn

from inference.engines.wav2lip_calibrate import synthetic_batches
from inference.engines.wav2lip_model import (
    EXPECTED_PARAMETERS,
    EXPECTED_STATE_ENTRIES,
    Wav2Lip,
    count_parameters,
)
from inference.engines.wav2lip_synthetic import calibrated_random_model


@cache
def synthetic_model(seed: int = 0) -> Wav2Lip:
    """Shared random generator (do not modify it in a test: copy it)."""
    return calibrated_random_model(seed)


def sample_inputs(batch: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """A (mel, face) batch in the generator's input format, drawn faces included."""
    mels, faces = synthetic_batches(1, batch, seed=seed)[0]
    return mels, faces


def run_torch(model: nn.Module, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(mel), torch.from_numpy(face)).numpy()


def test_size_matches_the_published_generator() -> None:
    model = Wav2Lip()
    state = model.state_dict()
    assert count_parameters(model) == EXPECTED_PARAMETERS == 36_298_035
    assert len(state) == EXPECTED_STATE_ENTRIES == 352


def test_key_names_follow_the_official_layout() -> None:
    state = Wav2Lip().state_dict()
    prefixes = {k.split(".")[0] for k in state}
    assert prefixes == {
        "face_encoder_blocks",
        "audio_encoder",
        "face_decoder_blocks",
        "output_block",
    }
    # conv_block.0 is the conv, conv_block.1 the BatchNorm (it has running statistics).
    assert state["face_encoder_blocks.1.0.conv_block.0.weight"].shape == (32, 16, 3, 3)
    assert "face_encoder_blocks.1.0.conv_block.1.running_var" in state
    assert state["face_encoder_blocks.0.0.conv_block.0.weight"].shape == (16, 6, 7, 7)
    assert state["audio_encoder.0.conv_block.0.weight"].shape == (32, 1, 3, 3)
    # Transposed convs store (in, out, k, k).
    assert state["face_decoder_blocks.1.0.conv_block.0.weight"].shape == (1024, 512, 3, 3)
    assert state["face_decoder_blocks.6.0.conv_block.0.weight"].shape == (160, 64, 3, 3)
    assert state["output_block.0.conv_block.0.weight"].shape == (32, 80, 3, 3)
    assert state["output_block.1.weight"].shape == (3, 32, 1, 1)
    n_face = len({k.split(".")[1] for k in state if k.startswith("face_encoder_blocks.")})
    n_dec = len({k.split(".")[1] for k in state if k.startswith("face_decoder_blocks.")})
    assert (n_face, n_dec) == (7, 7)


def test_forward_takes_audio_first_and_returns_bgr_in_unit_range() -> None:
    model = synthetic_model()
    mel, face = sample_inputs(2)
    out = run_torch(model, mel, face)
    assert out.shape == (2, 3, 96, 96)
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.std() > 0.02  # the synthetic model is not a constant
    with pytest.raises(RuntimeError):
        run_torch(model, face, mel)  # face first is a shape error, not a silent success


def test_batched_equals_unbatched() -> None:
    model = synthetic_model()
    mel, face = sample_inputs(3)
    together = run_torch(model, mel, face)
    alone = np.concatenate([run_torch(model, mel[i : i + 1], face[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_output_depends_on_audio_and_face() -> None:
    model = synthetic_model()
    mel, face = sample_inputs(2)
    base = run_torch(model, mel, face)
    assert np.abs(run_torch(model, mel[::-1].copy(), face) - base).max() > 1e-3
    assert np.abs(run_torch(model, mel, face[::-1].copy()) - base).max() > 1e-3
