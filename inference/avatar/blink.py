"""A photo blinks: its upper eyelids come down over the eyes, from the eye landmarks.

Per eye, the skin above the eye stretches down to a lid line that moves from the upper lid
towards the lower one, and what is left of the eye is squeezed between them; at full closure
the eye is gone under the lid, with a faint lash line where the lids meet. The lower lid and
the corners stay. Everything outside the eyes is the photo, pixel for pixel.
"""

from __future__ import annotations

import cv2
import numpy as np

from inference.avatar.landmarks import LEFT_EYE, RIGHT_EYE, contour_row
from inference.frames import AvatarFrame

LID_REACH = 1.0
"""Skin above the eye that stretches over it, in eye heights."""
LASH_SHADE = 0.72
"""Brightness left on the line where the lids meet when fully closed."""


def blink_image(frame: AvatarFrame, closure: float) -> np.ndarray:
    """``frame``'s picture with both eyes ``closure`` (0 open .. 1 shut) closed; the frame's
    own array when it has no landmarks or the eyes are open."""
    marks = frame.landmarks
    if marks is None or closure <= 0.0:
        return frame.image
    image = frame.image.copy()
    for eye in (LEFT_EYE, RIGHT_EYE):
        _close_eye(image, frame.image, marks.group(eye), closure)
    image.setflags(write=False)
    return image


def _close_eye(out: np.ndarray, source: np.ndarray, points: np.ndarray, closure: float) -> None:
    # The mesh's eye ring: corner, lower lid to the other corner, upper lid back.
    lower_lid, upper_lid = points[:9], np.concatenate([points[8:], points[:1]])
    x0 = int(np.floor(points[:, 0].min())) - 1
    x1 = int(np.ceil(points[:, 0].max())) + 2
    xs = np.arange(max(0, x0), min(source.shape[1], x1), dtype=np.float32)
    if xs.size < 3:
        return
    upper = contour_row(upper_lid, xs)
    lower = contour_row(lower_lid, xs)
    height = float(np.max(lower - upper))
    if height < 1.0:
        return
    top = upper - LID_REACH * height
    lid = upper + closure * (lower - upper)  # where the upper lid has come down to
    r0 = max(0, int(np.floor(top.min())) - 1)
    r1 = min(source.shape[0], int(np.ceil(lower.max())) + 1)
    ys = np.arange(r0, r1, dtype=np.float32)[:, None]
    # Backward map: above the new lid line the skin [top, upper] is stretched over
    # [top, lid]; below it the eye [upper, lower] is squeezed into [lid, lower].
    skin = top + (ys - top) * (upper - top) / np.maximum(lid - top, 1e-3)
    eye = upper + (ys - lid) * (lower - upper) / np.maximum(lower - lid, 1e-3)
    inside = (ys >= top) & (ys <= lower)
    map_y = np.where(ys < lid, skin, eye)
    map_y = np.where(inside, map_y, ys)
    map_x = np.broadcast_to(xs[None, :], map_y.shape)
    warped = cv2.remap(
        source, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR
    ).astype(np.float32)
    # Lashes: a soft darker line along the lid's edge, growing as the eye shuts.
    lash = np.exp(-(((ys - lid) / 1.2) ** 2)) * (1.0 - LASH_SHADE) * closure
    warped *= (1.0 - lash)[..., None]
    # Fade the warp out over the two columns at each end so no vertical edge shows.
    edge = np.minimum(np.arange(xs.size), np.arange(xs.size)[::-1]).astype(np.float32)
    alpha = (np.clip(edge / 2.0, 0.0, 1.0)[None, :] * inside)[..., None]
    c0 = int(xs[0])
    window = out[r0:r1, c0 : c0 + xs.size].astype(np.float32)
    out[r0:r1, c0 : c0 + xs.size] = (window * (1 - alpha) + warped * alpha + 0.5).astype(np.uint8)
