"""Wav2Lip's device path kernels on torch tensors, each matching what OpenCV computes on the
host path.

Kernels per batch, against OpenCV as the host path calls it:
- mouth 96x96 -> face box: bilinear with half-pixel centres and no antialias, the geometry of
  ``cv2.INTER_LINEAR`` (what the host path uses both ways; it never uses INTER_AREA). OpenCV
  computes in fixed point (11-bit weights), so 12-13% of the resized pixels come out one
  level apart, never more. ``antialias=True`` would average like INTER_AREA when the box is
  under 96 px (3 levels from INTER_LINEAR on a blurred picture, 125 on noise): not used.
- feathered blend: ``cv2.blendLinear``'s formula (the weighted sum divided by the weights'
  sum + 1e-5, rounded half to even): the same numbers.
- BGR -> I420: OpenCV's BT.601 limited-range integers (20-bit weights), chroma from the
  top-left pixel of each 2x2 block: the same numbers (checked against OpenCV 4.14).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from inference.engines.wav2lip_inputs import HALF
from inference.frames import Box

# OpenCV's BGR -> YUV I420 weights (BT.601, limited range) scaled by 2^20, as (B, G, R).
_SHIFT = 20
_Y_WEIGHTS = (102760, 528482, 269484)
_U_WEIGHTS = (460324, -305135, -155188)
_V_WEIGHTS = (-74448, -385875, 460324)
_Y_OFFSET = (16 << _SHIFT) + (1 << (_SHIFT - 1))
_C_OFFSET = (128 << _SHIFT) + (1 << (_SHIFT - 1))


def even_box(box: Box, height: int, width: int) -> Box:
    """``box`` grown to even edges, within a frame of even ``height`` and ``width``."""
    return Box(
        box.x1 - box.x1 % 2,
        box.y1 - box.y1 % 2,
        min(width, box.x2 + box.x2 % 2),
        min(height, box.y2 + box.y2 % 2),
    )


def bgr_to_i420(bgr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(n, h, w, 3) uint8 BGR with h and w even -> Y (n, h, w), U and V (n, h/2, w/2) uint8:
    ``cv2.COLOR_BGR2YUV_I420``'s numbers."""
    pixels = bgr.to(torch.int32)  # the weighted sums need 28 bits
    corners = pixels[:, ::2, ::2]
    return (
        _weigh(pixels, _Y_WEIGHTS, _Y_OFFSET),
        _weigh(corners, _U_WEIGHTS, _C_OFFSET),
        _weigh(corners, _V_WEIGHTS, _C_OFFSET),
    )


def _weigh(pixels: torch.Tensor, weights: tuple[int, int, int], offset: int) -> torch.Tensor:
    b, g, r = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    total = b * weights[0] + g * weights[1] + r * weights[2] + offset
    return (total >> _SHIFT).to(torch.uint8)


def resize_linear(small: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(n, 3, h0, w0) float grey levels -> (n, height, width, 3) float whole levels, within
    one level of ``cv2.resize(..., INTER_LINEAR)`` on the uint8 image (see the module doc)."""
    big = F.interpolate(
        small, size=(height, width), mode="bilinear", align_corners=False, antialias=False
    )
    return torch.floor(big + 0.5).clamp_(0, 255).permute(0, 2, 3, 1)


def face_tensor(crops: torch.Tensor) -> torch.Tensor:
    """(B, 3, 96, 96) uint8 crops -> the generator's (B, 6, 96, 96) float32 face input, built
    like ``wav2lip_inputs.face_input``: masked target, then reference, /255."""
    scaled = crops.float() * (1.0 / 255.0)
    face = torch.cat([scaled, scaled], dim=1)
    face[:, :3, HALF:] = 0.0  # the model must not see the mouth it has to draw
    return face
