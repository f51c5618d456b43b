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

MAX_GAP = 0.85
"""Largest lip gap, in units of the closed lips' height."""
INTERIOR_BGR = np.array([52, 40, 92], np.float32)
"""Dark red-brown of the mouth cavity."""
TEETH_BGR = np.array([196, 204, 216], np.float32)


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
    h_img = frame.image.shape[0]
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
    reach = np.maximum(
        np.outer(np.maximum(jaw_rows, lip_rows), cols), np.outer(width_rows, width_cols)
    )
    alpha = np.asarray(
        cv2.GaussianBlur((reach > 0.01).astype(np.float32), (0, 0), 3.0), dtype=np.float32
    )
    return _Geometry(
        box,
        mx,
        my,
        m.half_width,
        m.lip_height,
        jaw_rows,
        lip_rows.astype(np.float32),
        cols,
        width_rows,
        width_cols,
        xs,
        ys,
        alpha,
    )


def render_photo_mouth(frame: AvatarFrame, shape: MouthShape, teeth: bool) -> FacePatch:
    """The patch showing ``frame`` with its mouth in ``shape``."""
    g = _geometry(frame)
    region = frame.image[g.box.y1 : g.box.y2, g.box.x1 : g.box.x2]
    gap = shape.open * MAX_GAP * g.lip
    drop, lift = 0.78 * gap, 0.22 * gap
    spread = 1.0 + 0.14 * shape.wide - 0.24 * shape.round
    squeeze = 1.0 - 0.25 * shape.press  # pressed lips look thinner

    # Backward map: output pixel (x, y) samples the source at (x - dx, y - dy).
    # Inside the opening the lips split (a jump in dy at the lip line, hidden by the cavity);
    # beside it the cheeks must stretch continuously, or the lip line smears sideways.
    split = drop * g.jaw_rows - lift * g.lip_rows
    across = np.clip((g.ys - g.my) / (2.0 * g.lip) * 0.5 + 0.5, 0.0, 1.0)
    across = across * across * (3.0 - 2.0 * across)
    stretch = np.where(g.ys < g.my, g.lip_rows, g.jaw_rows) * (-lift + (drop + lift) * across)
    hole_w = g.half_width * spread * (0.78 - 0.25 * shape.round)
    inner = _ramp(np.abs(g.xs - g.mx), hole_w * 0.85, hole_w * 1.15)
    dy = (np.outer(split, inner) + np.outer(stretch, 1.0 - inner)) * g.cols[None, :]
    near = np.outer(g.width_rows, g.width_cols)
    map_x = g.xs[None, :] - (g.xs[None, :] - g.mx) * (1.0 - 1.0 / spread) * near
    squash = (g.ys[:, None] - g.my) * (1.0 - 1.0 / squeeze) * near
    map_y = g.ys[:, None] - dy - squash
    warped = cv2.remap(
        region,
        map_x.astype(np.float32),
        map_y.astype(np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    if gap > 0.5:  # below half a pixel there is no visible opening
        warped = _draw_opening(warped, g, drop, lift, spread, teeth, shape)
    return FacePatch(image=warped, box=g.box, alpha=g.alpha)


def _draw_opening(
    image: np.ndarray,
    g: _Geometry,
    drop: float,
    lift: float,
    spread: float,
    teeth: bool,
    shape: MouthShape,
) -> np.ndarray:
    top, bottom = g.my - lift, g.my + drop
    cy = (top + bottom) / 2.0
    half_h = max(0.5, (bottom - top) / 2.0)
    # Rounded lips make a rounder, narrower hole; spread lips a long thin one (same width as
    # the split in render_photo_mouth).
    half_w = g.half_width * spread * (0.78 - 0.25 * shape.round)
    # Work only on the hole's bounding box: it is a few percent of the patch.
    h, w = image.shape[:2]
    r0, r1 = max(0, int(top) - 2), min(h, int(np.ceil(bottom)) + 3)
    c0, c1 = max(0, int(g.mx - half_w) - 2), min(w, int(np.ceil(g.mx + half_w)) + 3)
    if r1 <= r0 or c1 <= c0:
        return image
    ys, xs = g.ys[r0:r1], g.xs[c0:c1]
    dx = (xs[None, :] - np.float32(g.mx)) / np.float32(max(half_w, 1.0))
    dyn = (ys[:, None] - np.float32(cy)) / np.float32(half_h)
    inside = 1.0 - (dx**2 + dyn**2)
    # Soft edge a couple of pixels wide whatever the hole's size.
    mask = np.clip(inside * (min(half_h, half_w) / 2.5), 0.0, 1.0)
    # Darker towards the back of the mouth.
    shade = 0.45 + 0.55 * np.clip(dyn**2 + dx**2, 0.0, 1.0)
    fill = INTERIOR_BGR[None, None, :] * shade[..., None]
    if teeth:
        depth = min(0.28 * (bottom - top), 0.35 * g.lip)
        tooth = _ramp(ys - top, depth * 0.8, depth)
        if shape.wide > 0.5:  # spread vowels show the lower teeth too
            tooth = np.maximum(tooth, _ramp(bottom - ys, depth * 0.5, depth * 0.7))
        t = tooth[:, None, None]
        fill = fill * (1.0 - t) + TEETH_BGR[None, None, :] * t
    out = image.copy()
    m = mask[..., None]
    window = out[r0:r1, c0:c1].astype(np.float32)
    out[r0:r1, c0:c1] = (window * (1.0 - m) + fill * m + 0.5).astype(np.uint8)
    return out
