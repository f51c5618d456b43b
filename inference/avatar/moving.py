"""A still photo's motion applied to I420 frames, cheaply: the live pipeline's frames
(rtc/live/motion.py) and the offline render's.

A pose lasts a step of frames (``sway.STEP``): the photo is warped once per step, and each
frame gets that warp plus a warp of only the region where it differs from the photo (the
mouth and jaw of a speech frame, the eyelids of a blink; all of a dissolve). The result is
the warp of the whole frame, up to the rounding of a few sample positions by 1/32 px where
a region was warped on its own (a level or so, on a few pixels at strong edges).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import cv2
import numpy as np

from inference.avatar.store import Avatar
from inference.avatar.sway import STEP, HeadMotion

Planes = tuple[np.ndarray, ...]
"""I420 planes: Y (h, w), U and V (h/2, w/2), uint8, any row stride."""
Region = tuple[int, int, int, int]
"""x0, y0, x1, y1 (exclusive), in a plane's pixels."""

CACHED_STEPS = 8
"""Steps whose warped photo is kept: live speech frames come back up to 8 slots ahead of
the idle ones."""


class MovingPhoto:
    """One photo's motion applied to I420 frames, with the warped photo cached per step."""

    @classmethod
    def for_avatar(cls, avatar: Avatar, seed: int) -> MovingPhoto | None:
        """``avatar`` moved by the motion of ``seed``; None when it does not move (only a
        still photo does: :meth:`HeadMotion.for_avatar`)."""
        motion = HeadMotion.for_avatar(avatar, seed)
        return None if motion is None else cls(motion, avatar.frames[0].image)

    def __init__(self, motion: HeadMotion, photo: np.ndarray) -> None:
        self.motion = motion
        yuv = np.asarray(cv2.cvtColor(photo, cv2.COLOR_BGR2YUV_I420), dtype=np.uint8)
        self.photo = i420_planes(yuv)
        """The photo's own I420 planes: what a frame is compared with."""
        self._steps: OrderedDict[int, tuple[tuple[np.ndarray, np.ndarray], Planes]] = OrderedDict()

    def __len__(self) -> int:
        """Steps held warped (a test checks that a step's frames share one warp)."""
        return len(self._steps)

    def warp(self, planes: Planes, out: Planes, index: int) -> None:
        """Write frame ``index``'s view of ``planes`` into ``out`` (same shapes, other arrays)."""
        first = index - index % STEP
        changed = _changed(planes, self.photo)
        height, width = planes[0].shape
        if changed is not None and 2 * _area(changed) > width * height:
            # Most of it differs (a dissolve): warped whole, the photo's warp is no help.
            matrices = self.motion.plane_matrices(first)
            changed = (0, 0, width, height)
        else:
            matrices, base = self._step(first)
            for target, source in zip(out, base, strict=True):
                target[...] = source
            if changed is None:
                return
        x0, y0, x1, y1 = changed
        chroma = (x0 // 2, y0 // 2, (x1 + 1) // 2, (y1 + 1) // 2)
        for k, (plane, target) in enumerate(zip(planes, out, strict=True)):
            m = matrices[min(k, 1)]
            region = _reached(m, chroma if k else changed, target.shape)
            if region is not None:
                _warp_region(plane, target, m, region)

    def moved(self, yuv: np.ndarray, index: int) -> np.ndarray:
        """Frame ``index``'s view of OpenCV's (h * 3/2, w) I420 array ``yuv``, a new one."""
        out = np.empty_like(yuv)
        self.warp(i420_planes(yuv), i420_planes(out), index)
        return out

    def _step(self, first: int) -> tuple[tuple[np.ndarray, np.ndarray], Planes]:
        """The plane matrices of the step starting at frame ``first`` and the photo warped
        by them (made once per step)."""
        cached = self._steps.get(first)
        if cached is not None:
            self._steps.move_to_end(first)
            return cached
        matrices = self.motion.plane_matrices(first)
        base = tuple(np.empty_like(p) for p in self.photo)
        for k, (plane, target) in enumerate(zip(self.photo, base, strict=True)):
            height, width = plane.shape
            _warp_region(plane, target, matrices[min(k, 1)], (0, 0, width, height))
        self._steps[first] = (matrices, base)
        if len(self._steps) > CACHED_STEPS:
            self._steps.popitem(last=False)
        return matrices, base


def i420_planes(yuv: np.ndarray) -> Planes:
    """OpenCV's (h * 3/2, w) I420 array as its three planes (views, no copy)."""
    height, width = yuv.shape[0] * 2 // 3, yuv.shape[1]
    flat = yuv.reshape(-1)
    luma, chroma = height * width, height * width // 4
    return (
        flat[:luma].reshape(height, width),
        flat[luma : luma + chroma].reshape(height // 2, width // 2),
        flat[luma + chroma :].reshape(height // 2, width // 2),
    )


def _changed(planes: Planes, photo: Planes) -> Region | None:
    """The luma region holding every sample in which ``planes`` differ from ``photo``."""
    boxes = []
    for k, (plane, reference) in enumerate(zip(planes, photo, strict=True)):
        x, y, w, h = cv2.boundingRect(cv2.absdiff(plane, reference))
        if w:
            scale = 2 if k else 1
            boxes.append((x * scale, y * scale, (x + w) * scale, (y + h) * scale))
    if not boxes:
        return None
    x0s, y0s, x1s, y1s = zip(*boxes, strict=True)
    return min(x0s), min(y0s), max(x1s), max(y1s)


def _area(region: Region) -> int:
    x0, y0, x1, y1 = region
    return (x1 - x0) * (y1 - y0)


def _reached(m: np.ndarray, source: Region, shape: tuple[int, ...]) -> Region | None:
    """The output region of the plane (of ``shape``) whose bilinear samples may touch the
    ``source`` region under the forward affine ``m``; None if it is empty."""
    x0, y0, x1, y1 = source
    # An output pixel reads the 2x2 source pixels around where it maps back to: those
    # within a pixel of the region. Its corners, mapped forward, bound what they reach
    # (plain floats: numpy's overhead on four points is most of the cost).
    (a, b, tx), (c, d, ty) = m.tolist()
    corners = ((x0 - 1, y0 - 1), (x1, y0 - 1), (x0 - 1, y1), (x1, y1))
    xs = [a * x + b * y + tx for x, y in corners]
    ys = [c * x + d * y + ty for x, y in corners]
    height, width = shape
    c0 = max(0, math.floor(min(xs)) - 1)
    r0 = max(0, math.floor(min(ys)) - 1)
    c1 = min(width, math.ceil(max(xs)) + 2)
    r1 = min(height, math.ceil(max(ys)) + 2)
    if c0 >= c1 or r0 >= r1:
        return None
    return c0, r0, c1, r1


def _warp_region(source: np.ndarray, out: np.ndarray, m: np.ndarray, region: Region) -> None:
    """``out[region]`` = ``source`` warped by the forward affine ``m`` (bilinear; the edge
    repeated where a sample falls just outside, which the motion's zoom keeps rare)."""
    c0, r0, c1, r1 = region
    shifted = m.copy()
    shifted[:, 2] -= (c0, r0)  # the region's own coordinates
    cv2.warpAffine(
        source,
        shifted,
        (c1 - c0, r1 - r0),
        dst=out[r0:r1, c0:c1],
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
