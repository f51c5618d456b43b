"""Render a mouth shape on a photo: warp lips and jaw, then draw the opening between them.

The warp is a backward map (cv2.remap) built from separable profiles cached per avatar frame,
so a frame costs two small outer products and one remap. The patch carries its own soft alpha
covering exactly the warped area, so the compositor adds no second seam.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from inference.frames import AvatarFrame, Box, FacePatch
from inference.visemes import MouthShape

MAX_GAP = 1.15
"""Largest lip gap, in units of the closed lips' height."""
INTERIOR_BGR = np.array([38, 28, 70], np.float32)
"""Dark red-brown of the mouth cavity."""
TEETH_BGR = np.array([222, 228, 236], np.float32)


@dataclass(frozen=True)
class _Geometry:
    """Per-frame constants of the warp, relative to the patch box."""

    box: Box
    mx: float
    my: float
    half_width: float
    lip: float
    jaw_rows: np.ndarray  # (h,) how much of the jaw drop each row below the mouth takes
    lip_rows: np.ndarray  # (h,) how much of the upper-lip lift each row above takes
    cols: np.ndarray  # (w,) horizontal falloff of the vertical warp
    width_rows: np.ndarray  # (h,) vertical falloff of the horizontal (spread/round) warp
    width_cols: np.ndarray  # (w,) horizontal extent of the spread/round warp
    xs: np.ndarray  # (w,) float32 column coordinates
    ys: np.ndarray  # (h,) float32 row coordinates
    alpha: np.ndarray  # (h, w) soft mask of the area the warp may touch


def _ramp(values: np.ndarray, full: float, zero: float) -> np.ndarray:
    """1 up to ``full``, cosine down to 0 at ``zero`` (both as distances)."""
    t = np.clip((values - full) / max(1e-3, zero - full), 0.0, 1.0)
    return (0.5 + 0.5 * np.cos(np.pi * t)).astype(np.float32)


@lru_cache(maxsize=2048)
def _geometry(frame: AvatarFrame) -> _Geometry:
    m = frame.mouth
    h_img, w_img = frame.image.shape[:2]
    face = frame.box
    # Extend below the face box: the jaw drop must fade out on the neck, not at the box edge.
    extra = int(0.35 * face.height)
    box = Box(face.x1, face.y1, face.x2, min(h_img, face.y2 + extra))
    xs = np.arange(box.width, dtype=np.float32)
    ys = np.arange(box.height, dtype=np.float32)
    mx, my = m.center_x - box.x1, m.center_y - box.y1
    chin = m.chin_y - box.y1
    below = ys - my
    # The whole jaw moves down to the chin, then the drop fades out over the neck.
    jaw_rows = np.where(below >= 0, _ramp(ys, chin, box.height - 2), 0.0).astype(np.float32)
    lip_rows = np.where(below < 0, np.exp(-((below / (1.3 * m.lip_height)) ** 2)), 0.0)
    jaw_width = max(m.half_width * 1.9, 1.0)
    cols = _ramp(np.abs(xs - mx), m.half_width * 1.2, jaw_width)
    width_rows = np.exp(-((below / (1.6 * m.lip_height)) ** 2)).astype(np.float32)
    width_cols = _ramp(np.abs(xs - mx), m.half_width * 1.1, m.half_width * 2.0)
    alpha = np.maximum(np.outer(np.maximum(jaw_rows, lip_rows), cols),
                       np.outer(width_rows, width_cols)).astype(np.float32)
    alpha = cv2.GaussianBlur((alpha > 0.01).astype(np.float32), (0, 0), 3.0)
    return _Geometry(box, mx, my, m.half_width, m.lip_height, jaw_rows,
                     lip_rows.astype(np.float32), cols, width_rows, width_cols, xs, ys, alpha)


def render_photo_mouth(frame: AvatarFrame, shape: MouthShape, teeth: bool) -> FacePatch:
    """The patch showing ``frame`` with its mouth in ``shape``."""
    g = _geometry(frame)
    region = frame.image[g.box.y1 : g.box.y2, g.box.x1 : g.box.x2]
    gap = shape.open * MAX_GAP * g.lip
    drop, lift = 0.78 * gap, 0.22 * gap
    spread = 1.0 + 0.14 * shape.wide - 0.24 * shape.round
    squeeze = 1.0 - 0.25 * shape.press  # pressed lips look thinner

    # Backward map: output pixel (x, y) samples the source at (x - dx, y - dy).
    dy = drop * np.outer(g.jaw_rows, g.cols) - lift * np.outer(g.lip_rows, g.cols)
    near = np.outer(g.width_rows, g.width_cols)
    map_x = g.xs[None, :] - (g.xs[None, :] - g.mx) * (1.0 - 1.0 / spread) * near
    squash = (g.ys[:, None] - g.my) * (1.0 - 1.0 / squeeze) * near
    map_y = g.ys[:, None] - dy - squash
    warped = cv2.remap(region, map_x.astype(np.float32), map_y.astype(np.float32),
                       cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if gap > 0.5:
        warped = _draw_opening(warped, g, gap, drop, lift, spread, teeth, shape)
    return FacePatch(image=warped, box=g.box, alpha=g.alpha)


def _draw_opening(image: np.ndarray, g: _Geometry, gap: float, drop: float, lift: float,
                  spread: float, teeth: bool, shape: MouthShape) -> np.ndarray:
    top, bottom = g.my - lift, g.my + drop
    cy = (top + bottom) / 2.0
    half_h = max(0.5, (bottom - top) / 2.0)
    # Rounded lips make a rounder, narrower hole; spread lips a long thin one.
    half_w = g.half_width * spread * (0.78 - 0.25 * shape.round)
    dx = (g.xs[None, :] - g.mx) / max(half_w, 1.0)
    dyn = (g.ys[:, None] - cy) / half_h
    inside = 1.0 - (dx**2 + dyn**2)
    # Soft edge about one pixel wide whatever the hole's size.
    mask = np.clip(inside * min(half_h, half_w) / 1.5, 0.0, 1.0).astype(np.float32)
    if not mask.any():
        return image
    # Darker towards the back of the mouth.
    shade = (0.65 + 0.35 * np.clip(np.abs(dyn), 0.0, 1.0)).astype(np.float32)
    fill = INTERIOR_BGR[None, None, :] * shade[..., None]
    if teeth:
        depth = min(0.38 * (bottom - top), 0.45 * g.lip)
        upper = _ramp(g.ys - top, depth * 0.8, depth)[:, None] * np.ones_like(dx)
        lower = np.zeros_like(upper)
        if shape.wide > 0.5:  # spread vowels show the lower teeth too
            lower = _ramp(bottom - g.ys, depth * 0.5, depth * 0.7)[:, None] * np.ones_like(dx)
        tooth = np.maximum(upper, lower)[..., None]
        fill = fill * (1.0 - tooth) + TEETH_BGR[None, None, :] * tooth
    m = mask[..., None]
    out = image.astype(np.float32) * (1.0 - m) + fill * m
    return (out + 0.5).astype(np.uint8)
