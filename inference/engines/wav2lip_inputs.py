"""How the Wav2Lip generator's inputs are made from a request, in one place.

Both per-batch paths use these: the host path of :mod:`inference.engines.wav2lip` every
batch, the device path of :mod:`inference.engines.wav2lip_torch_path` once per avatar frame
(its crops must be the very bytes the host path feeds the model, or the two would not agree).
"""

from __future__ import annotations

import cv2
import numpy as np

from inference.engines.wav2lip_model import FACE_SIZE, MEL_BANDS, MEL_STEPS
from inference.frames import AvatarFrame

HALF = FACE_SIZE // 2
"""First row of the target face the model must not see (it draws the mouth there)."""


def crop_face(frame: AvatarFrame) -> np.ndarray:
    """``frame.image[box]`` (a view); ValueError for an empty box or a non-BGR image."""
    box = frame.box
    crop = frame.image[box.y1 : box.y2, box.x1 : box.x2]
    if crop.shape[0] == 0 or crop.shape[1] == 0 or crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"face box {box} gives an empty or non-BGR crop of {frame.image.shape}")
    return crop


def small_face(frame: AvatarFrame) -> np.ndarray:
    """The face crop resized to 96x96 (aspect ignored), CHW uint8 BGR.

    INTER_LINEAR, OpenCV's default, as the training crops were resized.
    """
    small = cv2.resize(crop_face(frame), (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(small.transpose(2, 0, 1))


def mel_input(mel: np.ndarray) -> np.ndarray:
    """A (80, 16) mel window as the model's (1, 80, 16) float32; ValueError for other shapes."""
    if mel.shape != (MEL_BANDS, MEL_STEPS):
        raise ValueError(f"mel window has shape {mel.shape}; expected ({MEL_BANDS}, {MEL_STEPS})")
    return np.asarray(mel, dtype=np.float32)[None]


def face_input(small: np.ndarray) -> np.ndarray:
    """(B, 3, 96, 96) uint8 crops -> (B, 6, 96, 96) float32: masked target, then reference,
    both BGR /255."""
    scaled = small.astype(np.float32)
    scaled *= 1.0 / 255.0
    face = np.concatenate([scaled, scaled], axis=1)
    face[:, :3, HALF:] = 0.0  # the model must not see the mouth it has to draw
    return face
