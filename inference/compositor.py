"""Paste an engine's face patch back into the avatar frame.

Default: a feathered mask over the lower face, so the seam of the crop does not show (the
common complaint about the original's plain paste). The plain paste stays available.
Colour order: everything here is BGR; the one conversion happens when a frame leaves the
pipeline, BGR -> I420 with OpenCV (``inference.mp4.bgr_to_video_frame``).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from inference.frames import AvatarFrame, FacePatch


@lru_cache(maxsize=64)
def lower_face_mask(height: int, width: int) -> np.ndarray:
    """float32 (h, w) mask: 0 at the box edges and over the eyes, 1 over mouth and jaw."""
    mask = np.zeros((height, width), np.float32)
    # Ellipse over the lower ~60% of the box: mouth, cheeks and chin.
    center = (width // 2, int(height * 0.68))
    axes = (max(1, int(width * 0.40)), max(1, int(height * 0.36)))
    cv2.ellipse(mask, center, axes, 0, 0, 360, 1.0, thickness=-1)
    sigma = max(1.0, min(height, width) * 0.06)
    mask = np.asarray(cv2.GaussianBlur(mask, (0, 0), sigma), dtype=np.float32)
    edge = np.minimum.outer(
        np.minimum(np.arange(height), np.arange(height)[::-1]),
        np.minimum(np.arange(width), np.arange(width)[::-1]),
    ).astype(np.float32)
    # Guarantee the very border is untouched whatever the blur left there.
    mask = (mask * np.clip(edge / max(2.0, sigma), 0.0, 1.0)).astype(np.float32)
    mask.setflags(write=False)
    return mask


@lru_cache(maxsize=64)
def lower_face_complement(height: int, width: int) -> np.ndarray:
    """1 - :func:`lower_face_mask`, kept like the mask since both are used every frame."""
    complement = np.asarray(1.0 - lower_face_mask(height, width), dtype=np.float32)
    complement.setflags(write=False)
    return complement


def composite(frame: AvatarFrame, patch: FacePatch, feather: bool = True) -> np.ndarray:
    """A new full BGR frame with ``patch`` pasted over its box; ``frame.image`` is untouched."""
    out = frame.image.copy()
    box = patch.box
    region = out[box.y1 : box.y2, box.x1 : box.x2]
    if patch.alpha is not None:
        alpha = np.asarray(patch.alpha, dtype=np.float32)
        complement = np.asarray(1.0 - alpha, dtype=np.float32)
    elif feather:
        alpha = lower_face_mask(box.height, box.width)
        complement = lower_face_complement(box.height, box.width)
    else:
        region[...] = patch.image
        return out
    # OpenCV's blend rounds like the float formula (within 1) at a fifth of numpy's cost.
    region[...] = cv2.blendLinear(patch.image, region, alpha, complement)
    return out
