"""A still photo's head sways and breathes: a slow, small, deterministic motion of the frame.

Each frame index (25 fps) gets one affine transform made of

* a tilt about the face centre and a drift of the whole picture, each a sum of three slow
  sines (periods 5-25 s) whose periods, phases and weights come from the seed, so the motion
  never repeats visibly and two sessions do not sway in step;
* breathing: a vertical stretch anchored at the bottom of the frame (the shoulders stay, the
  head lifts), one smooth breath every 4 s or so;
* a constant zoom just large enough that no border can show whatever the motion does.

The bounds are hard (the weights of the sines add up to one), and the motion is smooth: the
pose changes every third frame (``STEP``), by a fraction of a pixel. The same seed
gives the same motion, frame for frame, so the live pipeline and the offline render agree and
tests can check it. inference/avatar/moving.py applies the transform to I420 planes (luma,
and chroma at half scale: :meth:`HeadMotion.plane_matrices`), for live frames and rendered
ones alike, so frames need no BGR round trip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from inference.avatar.store import Avatar
from inference.frames import FPS

TILT_DEGREES = 0.5
"""Most rotation about the face centre, either way."""
SHIFT = 0.003
"""Most drift along each axis, in frame heights (1.5 px on the 512 px photo)."""
BREATH = 0.003
"""Vertical stretch at the top of a breath (1.5 px at the top of a 512 px frame, about 1 px
at the eyes)."""
BREATH_PERIOD = 4.0
"""Seconds per breath (each seed picks within 10 % of it)."""
SWAY_PERIODS = (5.0, 25.0)
"""Shortest and longest period of the sines of tilt and drift, in seconds."""
SINES = 3
"""Sines summed per motion channel (tilt, drift x, drift y)."""
STEP = 3
"""Frames that share one pose. The head moves 8.3 times a second, by at most about 0.3 px at
the face and 0.5 px at the frame's corners a step (0.15 px typically), which looks as smooth
as moving every frame; the live pipeline then warps the photo once per step and, in each
frame, only what differs from the photo (the mouth, the eyelids): rtc/live/motion.py."""
_SAFETY = 0.5
"""Extra border pixels the zoom hides, for the bilinear filter's reach."""


@dataclass(frozen=True)
class Pose:
    """Where the head is at one frame (before the constant zoom)."""

    tilt: float
    """Degrees, counter-clockwise as seen (OpenCV's sign)."""
    shift_x: float
    """Pixels, positive to the right."""
    shift_y: float
    """Pixels, positive downwards."""
    breath: float
    """Vertical stretch factor, 1 (breathed out) .. 1 + BREATH (breathed in)."""


class _Sines:
    """``amplitude * sum(w_k sin(2 pi f_k t + phase_k))`` with weights adding up to one."""

    def __init__(self, rng: np.random.Generator, amplitude: float) -> None:
        low, high = SWAY_PERIODS
        self.freqs = 1.0 / rng.uniform(low, high, SINES)
        self.phases = rng.uniform(0.0, 2 * math.pi, SINES)
        weights = rng.uniform(0.5, 1.0, SINES)
        self.weights = amplitude * weights / weights.sum()

    def at(self, t: float) -> float:
        return float(np.dot(self.weights, np.sin(2 * math.pi * self.freqs * t + self.phases)))


class HeadMotion:
    """The idle motion of one session (``seed``) on frames of ``size`` (width, height) whose
    face is centred at ``centre`` (x, y)."""

    def __init__(self, seed: int, size: tuple[int, int], centre: tuple[float, float]) -> None:
        self.seed = seed
        self.size = size
        self.centre = centre
        height = size[1]
        rng = np.random.default_rng(seed)
        self._tilt = _Sines(rng, TILT_DEGREES)
        self._x = _Sines(rng, SHIFT * height)
        self._y = _Sines(rng, SHIFT * height)
        self._breath_period = BREATH_PERIOD * rng.uniform(0.9, 1.1)
        self._breath_phase = rng.uniform(0.0, 2 * math.pi)
        self.zoom = _zoom(size, centre)
        """The constant zoom that keeps the border out of sight."""

    @classmethod
    def for_avatar(cls, avatar: Avatar, seed: int) -> HeadMotion | None:
        """The motion of ``avatar``'s frames, or None when it should not move: only a still
        photo gets one (a video loop moves on its own, a drawn character is not a photo)."""
        if not avatar.still_photo:
            return None
        frame = avatar.frames[0]
        height, width = frame.image.shape[:2]
        box = frame.box
        return cls(seed, (width, height), ((box.x1 + box.x2 - 1) / 2, (box.y1 + box.y2 - 1) / 2))

    def pose(self, index: int) -> Pose:
        """The head's pose at frame ``index`` (the same for the frames of one step)."""
        t = (index - index % STEP) / FPS
        cycle = 2 * math.pi * t / self._breath_period + self._breath_phase
        return Pose(
            tilt=self._tilt.at(t),
            shift_x=self._x.at(t),
            shift_y=self._y.at(t),
            breath=1.0 + BREATH * (1.0 - math.cos(cycle)) / 2,
        )

    def matrix(self, index: int) -> np.ndarray:
        """float64 (2, 3): where a source pixel lands in frame ``index`` (OpenCV's forward
        affine; pixel centres at integer coordinates)."""
        return _forward(self.pose(index), self.size, self.centre, self.zoom)[:2]

    def plane_matrices(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``index``'s forward affines of the I420 planes: luma's (as :meth:`matrix`)
        and chroma's (U and V, half scale)."""
        luma = self.matrix(index)
        # A chroma sample (j, i) covers luma pixels 2j, 2j + 1: its centre is luma
        # 2j + 0.5. Conjugating the luma transform by that map keeps colour on its pixels.
        return luma, (_FROM_LUMA @ np.vstack([luma, [0.0, 0.0, 1.0]]) @ _TO_LUMA)[:2]


_TO_LUMA = np.array([[2.0, 0.0, 0.5], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]])
"""Chroma sample coordinates -> luma pixel coordinates (4:2:0, centred siting)."""
_FROM_LUMA = np.linalg.inv(_TO_LUMA)


def _translate(x: float, y: float) -> np.ndarray:
    return np.array([[1.0, 0.0, x], [0.0, 1.0, y], [0.0, 0.0, 1.0]])


def _forward(
    pose: Pose, size: tuple[int, int], centre: tuple[float, float], zoom: float
) -> np.ndarray:
    """3x3 source -> frame: tilt about the face centre, drift, breathe, zoom."""
    width, height = size
    cx, cy = centre
    tilt = np.vstack([cv2.getRotationMatrix2D((cx, cy), pose.tilt, 1.0), [0.0, 0.0, 1.0]])
    bottom = height - 0.5  # the frame's lower edge stays where it is
    breathe = _translate(0.0, bottom) @ np.diag([1.0, pose.breath, 1.0]) @ _translate(0, -bottom)
    mx, my = (width - 1) / 2, (height - 1) / 2
    magnify = _translate(mx, my) @ np.diag([zoom, zoom, 1.0]) @ _translate(-mx, -my)
    return np.asarray(magnify @ breathe @ _translate(pose.shift_x, pose.shift_y) @ tilt)


def _zoom(size: tuple[int, int], centre: tuple[float, float]) -> float:
    """The least zoom about the frame's centre that keeps every source point a frame shows
    inside the picture, whatever the pose within the bounds."""
    width, height = size
    cx, cy = centre
    reach = max(math.hypot(x - cx, y - cy) for x in (0, width) for y in (0, height))
    shift = SHIFT * height
    # A border point is moved by the drift, by the tilt (at most reach * angle from the face
    # centre), and towards the bottom edge by the breath (shrinking its distance by 1/breath).
    margin = (1 + BREATH) * (shift + math.radians(TILT_DEGREES) * (reach + 2 * shift) + _SAFETY)
    return 1.0 / (1.0 - 2.0 * margin / min(width, height))
