"""Render a mouth shape on a photo: warp lips and jaw apart, then shade the opening between.

The lips part along the photo's own mouth line. With face landmarks
(inference/avatar/landmarks.py) that line is the middle of the inner lip contour, curved
with a smile and running between the upper and lower teeth when the photo shows them. The
teeth then travel with their lips, the upper row up a little and the lower row down with the
jaw, and the opening between them is the photo's own mouth, opened. Without landmarks the
line is straight through Haar's mouth centre and teeth are drawn in (unless the avatar has
none).

The warp is a backward map (cv2.remap) from profiles cached per avatar frame: a frame costs a
few array products and one remap, and a closed mouth is the photo itself, pixel for pixel.
The patch carries its own soft alpha covering exactly the warped area, so the compositor adds
no second seam.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import cv2
import numpy as np

from inference.avatar.landmarks import LIPS_INNER, LIPS_OUTER, contour_row
from inference.frames import AvatarFrame, Box, FacePatch
from inference.visemes import MouthShape

MAX_GAP = 0.85
"""Largest lip gap, in units of the closed lips' height."""
INTERIOR_BGR = np.array([52, 40, 92], np.float32)
"""Dark red-brown of the mouth cavity."""
TONGUE_BGR = np.array([92, 88, 170], np.float32)
"""The tongue's pink, seen low in the cavity of open vowels."""
TEETH_BGR = np.array([196, 204, 216], np.float32)
TEETH_SHOWN = 0.25
"""An inner-lip gap at rest above this share of the lips' height: the photo shows its teeth."""


@dataclass(frozen=True)
class _Geometry:
    """Per-frame constants of the warp, relative to the patch box (kept for every frame of
    an avatar: small, apart from the alpha mask the old renderer kept too)."""

    box: Box
    mx: float
    my: float
    half_width: float
    inner_half: float  # half the opening's width at rest (inner lip corners)
    lip: float
    shows_teeth: bool
    split: np.ndarray  # (w,) the mouth line's row per column
    jaw_rows: np.ndarray  # (h,) share of the jaw drop by row, below the line
    cols: np.ndarray  # (w,) horizontal falloff of the vertical warp
    width_cols: np.ndarray  # (w,) horizontal extent of the spread/round warp
    xs: np.ndarray  # (w,) float32 column coordinates
    ys: np.ndarray  # (h,) float32 row coordinates
    alpha: np.ndarray  # (h, w) soft mask of the area the warp may touch


@dataclass(frozen=True)
class _Fields:
    """The warp's per-pixel weights around the curved mouth line (h, w each): a megabyte a
    frame, so only the last few frames keep theirs (a still photo always hits)."""

    rel: np.ndarray  # signed distance below the mouth line
    jaw: np.ndarray  # share of the jaw drop each pixel below the line takes
    lips: np.ndarray  # share of the upper-lip lift each pixel above takes
    across: np.ndarray  # 0 above the lips .. 1 below: how the cheeks stretch
    near: np.ndarray  # reach of the horizontal (spread/round) warp


def _ramp(values: np.ndarray, full: float, zero: float) -> np.ndarray:
    """1 up to ``full``, cosine down to 0 at ``zero`` (both as distances)."""
    t = np.clip((values - full) / max(1e-3, zero - full), 0.0, 1.0)
    return (0.5 + 0.5 * np.cos(np.pi * t)).astype(np.float32)


def _mouth_line(frame: AvatarFrame, box: Box, xs: np.ndarray) -> tuple[np.ndarray, float, bool]:
    """The line the lips part along (a row per column), the opening's half width at rest,
    and whether the photo shows its teeth there."""
    m = frame.mouth
    marks = frame.landmarks
    if marks is None:
        return np.full(xs.shape, m.center_y - box.y1, np.float32), 0.78 * m.half_width, False
    inner = marks.group(LIPS_INNER) - np.array([box.x1, box.y1], np.float32)
    upper, lower = inner[:11], np.concatenate([inner[10:], inner[:1]])  # 78..13..308, 308..14..78
    outer = marks.group(LIPS_OUTER) - np.array([box.x1, box.y1], np.float32)
    # Beyond the inner corners the line runs on to the outer ones (held flat further out).
    corners = outer[[0, 10]]
    top = contour_row(np.concatenate([upper, corners]), xs)
    bottom = contour_row(np.concatenate([lower, corners]), xs)
    centre = int(np.clip(round(m.center_x - box.x1), 0, len(xs) - 1))
    shows = float(bottom[centre] - top[centre]) > TEETH_SHOWN * m.lip_height
    inner_half = float(np.ptp(inner[:, 0])) / 2.0
    line = _teeth_line(frame, box, top, bottom) if shows else (top + bottom) / 2.0
    return line, max(inner_half, 0.3 * m.half_width), shows


def _teeth_line(frame: AvatarFrame, box: Box, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Where the upper teeth meet the lower ones (or the lower lip): the darkest row between
    the inner lips, per column, smoothed along the mouth. Parting the lips there keeps each
    row of teeth whole on its own lip."""
    gray = cv2.cvtColor(frame.image[box.y1 : box.y2, box.x1 : box.x2], cv2.COLOR_BGR2GRAY)
    gray = cv2.GaussianBlur(gray, (0, 0), 1.0).astype(np.float32)
    rows = np.arange(gray.shape[0], dtype=np.float32)[:, None]
    # Search the lower two thirds of the gap: smiles show more upper than lower teeth.
    lo = top + 0.3 * (bottom - top)
    hi = bottom - 0.05 * (bottom - top)
    inside = (rows >= lo[None, :]) & (rows <= hi[None, :])
    darkest = np.argmin(np.where(inside, gray, np.inf), axis=0).astype(np.float32)
    found = inside.any(axis=0)
    line = np.where(found, darkest, (top + bottom) / 2.0)
    line = cv2.GaussianBlur(line[None, :], (0, 0), 4.0)[0]  # one tooth gap is not the line
    return np.clip(line, top, bottom).astype(np.float32)


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
    mx = m.center_x - box.x1
    split, inner_half, shows = _mouth_line(frame, box, xs)
    my = float(split[int(np.clip(round(mx), 0, len(xs) - 1))])
    chin = m.chin_y - box.y1
    # The whole jaw moves down to the chin, then the drop fades out over the neck.
    jaw_rows = _ramp(ys, chin, box.height - 2)
    jaw_width = max(m.half_width * 1.9, 1.0)
    cols = _ramp(np.abs(xs - mx), m.half_width * 1.2, jaw_width)
    width_cols = _ramp(np.abs(xs - mx), m.half_width * 1.1, m.half_width * 2.0)
    g = _Geometry(
        box, mx, my, m.half_width, inner_half, m.lip_height, shows, split,
        jaw_rows, cols, width_cols, xs, ys, np.zeros(0, np.float32),
    )  # fmt: skip
    f = _weights(g)
    reach = np.maximum(np.maximum(f.jaw, f.lips) * cols[None, :], f.near)
    alpha = np.asarray(
        cv2.GaussianBlur((reach > 0.01).astype(np.float32), (0, 0), 3.0), dtype=np.float32
    )
    return replace(g, alpha=alpha)


def _weights(g: _Geometry) -> _Fields:
    rel = g.ys[:, None] - g.split[None, :]
    jaw = np.where(rel >= 0, g.jaw_rows[:, None], 0.0).astype(np.float32)
    lips = np.where(rel < 0, np.exp(-((rel / (1.3 * g.lip)) ** 2)), 0.0).astype(np.float32)
    across = np.clip(rel / (2.0 * g.lip) * 0.5 + 0.5, 0.0, 1.0)
    across = (across * across * (3.0 - 2.0 * across)).astype(np.float32)
    near = np.exp(-((rel / (1.6 * g.lip)) ** 2)) * g.width_cols[None, :]
    return _Fields(rel.astype(np.float32), jaw, lips, across, near.astype(np.float32))


@lru_cache(maxsize=16)
def _fields(frame: AvatarFrame) -> _Fields:
    return _weights(_geometry(frame))


def render_photo_mouth(frame: AvatarFrame, shape: MouthShape, teeth: bool) -> FacePatch:
    """The patch showing ``frame`` with its mouth in ``shape``."""
    g, f = _geometry(frame), _fields(frame)
    region = frame.image[g.box.y1 : g.box.y2, g.box.x1 : g.box.x2]
    gap = shape.open * MAX_GAP * g.lip
    drop, lift = 0.78 * gap, 0.22 * gap
    spread = 1.0 + 0.14 * shape.wide - 0.24 * shape.round
    squeeze = 1.0 - 0.25 * shape.press  # pressed lips look thinner
    hole_w = 0.9 * g.inner_half * spread * (1.0 - 0.3 * shape.round)
    # The opening's height along the mouth: a lens, full in the middle and closing to a point
    # at the corners, as lips part (a flat profile gives a box with hard ends).
    inner = np.sqrt(np.clip(1.0 - ((g.xs - g.mx) / max(hole_w, 1.0)) ** 2, 0.0, 1.0))

    # Backward map: output pixel (x, y) samples the source at (x - dx, y - dy).
    # Inside the opening the lips split (a jump in dy at the mouth line, covered by the
    # cavity); beside it the cheeks stretch continuously, or the lip line smears sideways.
    split = drop * f.jaw - lift * f.lips
    stretch = np.where(f.rel < 0, f.lips, f.jaw) * (-lift + (drop + lift) * f.across)
    dy = (split * inner[None, :] + stretch * (1.0 - inner[None, :])) * g.cols[None, :]
    map_x = g.xs[None, :] - (g.xs[None, :] - g.mx) * (1.0 - 1.0 / spread) * f.near
    squash = f.rel * (1.0 - 1.0 / squeeze) * f.near
    map_y = g.ys[:, None] - dy - squash
    warped = cv2.remap(
        region,
        map_x.astype(np.float32),
        map_y.astype(np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    if gap > 0.5:  # below half a pixel there is no visible opening
        opening = inner * g.cols
        warped = _shade_opening(warped, g, drop * opening, lift * opening, teeth, shape)
    return FacePatch(image=warped, box=g.box, alpha=g.alpha)


def _shade_opening(
    image: np.ndarray,
    g: _Geometry,
    down: np.ndarray,
    up: np.ndarray,
    teeth: bool,
    shape: MouthShape,
) -> np.ndarray:
    """Fill the gap the warp opened (per column: from ``up`` above the mouth line to ``down``
    below it) with the inside of a mouth, edges soft over about a pixel."""
    columns = np.nonzero(down + up > 0.5)[0]
    if columns.size == 0:
        return image
    c0, c1 = int(columns[0]), int(columns[-1]) + 1
    top = (g.split - up)[c0:c1]
    bottom = (g.split + down)[c0:c1]
    r0 = max(0, int(np.floor(top.min())) - 1)
    r1 = min(image.shape[0], int(np.ceil(bottom.max())) + 2)
    if r1 <= r0:
        return image
    ys = g.ys[r0:r1, None]
    mask = np.clip(np.minimum(ys - top[None, :], bottom[None, :] - ys) + 0.5, 0.0, 1.0)
    height = np.maximum(bottom - top, 1e-3)[None, :]
    depth = (ys - top[None, :]) / height  # 0 at the upper edge .. 1 at the lower
    sideways = np.abs(g.xs[None, c0:c1] - g.mx) / max(1.0, float(c1 - c0) / 2.0)
    # Darkest at the back, lighter towards the lips.
    shade = 0.45 + 0.55 * np.clip((2.0 * depth - 1.0) ** 2 + sideways**2, 0.0, 1.0)
    fill = INTERIOR_BGR[None, None, :] * shade[..., None]
    tongue = np.clip(shape.open - 0.4, 0.0, 0.6) * _ramp(1.0 - depth, 0.15, 0.45) * (1 - sideways)
    fill = fill * (1.0 - tongue[..., None]) + TONGUE_BGR[None, None, :] * tongue[..., None]
    if teeth and not g.shows_teeth:  # the photo's own teeth move with its lips otherwise
        edge = np.minimum(0.28 * height, 0.35 * g.lip)
        tooth = _ramp((ys - top[None, :]) / edge, 0.8, 1.0)
        if shape.wide > 0.5:  # spread vowels show the lower teeth too
            tooth = np.maximum(tooth, _ramp((bottom[None, :] - ys) / edge, 0.5, 0.7))
        t = tooth[..., None]
        fill = fill * (1.0 - t) + TEETH_BGR[None, None, :] * t
    out = image.copy()
    m = mask[..., None]
    window = out[r0:r1, c0:c1].astype(np.float32)
    out[r0:r1, c0:c1] = (window * (1.0 - m) + fill * m + 0.5).astype(np.uint8)
    return out
