"""Random-weight Wav2Lip generators for tests and benchmarks (no real weights exist here).

Plain random weights with fresh BatchNorm statistics give outputs stuck near 0.5, where
backends agree trivially. So the statistics are measured on drawn faces and speech-like mels
(:func:`~inference.engines.wav2lip_calibrate.synthetic_batches`): the outputs then spread over
[0, 1] and differences between backends, precisions and paths mean something.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from inference.engines.wav2lip_calibrate import synthetic_batches
from inference.engines.wav2lip_loader import load_wav2lip
from inference.engines.wav2lip_model import Wav2Lip

CHECKPOINT_NAME = "wav2lip.pth"
"""The file :func:`random_checkpoint` writes (a usual NOGAN name, legacy layout)."""


def calibrated_random_model(seed: int = 0, batches: int = 2) -> Wav2Lip:
    """A generator with weights drawn from ``seed`` and BatchNorm statistics averaged over
    ``batches`` batches of 6 drawn faces; returned in eval mode, gradients off.

    Deterministic: the same seed and batches give the same weights on every run.
    """
    torch.manual_seed(seed)
    model = Wav2Lip()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # a plain average over the calibration passes
            module.reset_running_stats()
    model.train()
    with torch.no_grad():
        for mel, face in synthetic_batches(batches, 6, seed=seed + 1):
            model(torch.from_numpy(mel), torch.from_numpy(face))
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def save_checkpoint(model: Wav2Lip, path: Path) -> Path:
    """``model`` written to ``path`` in the official legacy layout (``{"state_dict": ...}``,
    what ``wav2lip_gan.pth`` / ``wav2lip.pth`` hold), for the server or loader to find."""
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def random_checkpoint(folder: Path, seed: int = 0, batches: int = 2) -> Wav2Lip:
    """:func:`calibrated_random_model` saved into ``folder`` as an official legacy checkpoint
    and loaded back through ``load_wav2lip``, like a user's file."""
    path = save_checkpoint(calibrated_random_model(seed, batches), folder / CHECKPOINT_NAME)
    return load_wav2lip(path)
