"""The weight-free engine's mouth on a photo with landmarks: it is the photo itself at rest,
opens with loudness along the photo's own mouth line, keeps the photo's teeth on their lips,
and rounds or spreads with the vowel."""

from __future__ import annotations

import numpy as np
import pytest

from inference.avatar.landmarks import LIPS_INNER
from inference.avatar.store import AvatarStore
from inference.engines.base import LipSyncEngine
from inference.engines.viseme_photo import _geometry, render_photo_mouth
from inference.frames import AvatarFrame, FacePatch, LipSyncRequest
from inference.mel import melspectrogram, window_for_frame
from inference.tts import TextToSpeech
from inference.visemes import VISEMES, MouthShape


@pytest.fixture(scope="module")
def photo(avatar_store: AvatarStore) -> AvatarFrame:
    frame = avatar_store.get("astronaut").frames[0]
    assert frame.landmarks is not None, "the face mesh is not installed (see the README)"
    return frame


def source(frame: AvatarFrame, patch: FacePatch) -> np.ndarray:
    b = patch.box
    return frame.image[b.y1 : b.y2, b.x1 : b.x2]


def changed(frame: AvatarFrame, patch: FacePatch) -> np.ndarray:
    """Pixels the mouth changed by more than a few grey levels."""
    diff = np.abs(patch.image.astype(np.int16) - source(frame, patch).astype(np.int16))
    return diff.max(axis=2) > 12


def _cavity(image: np.ndarray) -> np.ndarray:
    b, g, r = (image[..., i].astype(np.int32) for i in range(3))
    return (r < 110) & (g < 60) & (b < 70) & (r > g + 15)


def dark(frame: AvatarFrame, patch: FacePatch) -> np.ndarray:
    """New mouth-inside pixels (dark red-brown) around the mouth: the opened mouth (shadows
    the warp moves elsewhere on the face are not the mouth)."""
    new = _cavity(patch.image) & ~_cavity(source(frame, patch))
    g = _geometry(frame)
    rows, cols = np.ogrid[: new.shape[0], : new.shape[1]]
    near = (
        (np.abs(cols - g.mx) < 1.5 * g.half_width)
        & (rows > g.my - g.lip)
        & (rows < g.my + 2.5 * g.lip)
    )
    return new & near


def test_at_rest_the_mouth_is_the_photo_itself(photo: AvatarFrame) -> None:
    patch = render_photo_mouth(photo, VISEMES["rest"], teeth=True)
    np.testing.assert_array_equal(patch.image, source(photo, patch))  # no line, no seam


def test_the_mouth_opens_monotonically_with_loudness(
    photo: AvatarFrame, viseme_engine: LipSyncEngine, espeak_tts: TextToSpeech
) -> None:
    vowel = espeak_tts.synthesize("Аааааааааа", "ru").pcm  # no phonemes given: sound only
    vowel = vowel / np.abs(vowel).max()
    areas = []
    for amplitude in (0.01, 0.03, 0.1, 0.3, 1.0):
        window = window_for_frame(melspectrogram(amplitude * vowel), 6)
        request = LipSyncRequest(mel=window, frame=photo, silent=False, phoneme=None, stream=None)
        (patch,) = viseme_engine.infer([request])
        areas.append(int(dark(photo, patch).sum()))
    assert areas == sorted(areas), areas
    assert areas[-1] > 4 * max(areas[0], 20), areas


def test_the_opening_follows_the_smile_and_keeps_the_upper_teeth(photo: AvatarFrame) -> None:
    patch = render_photo_mouth(photo, VISEMES["AA"], teeth=True)
    hole = dark(photo, patch)
    g = _geometry(photo)
    cols = np.nonzero(hole.any(axis=0))[0]
    middle, side = round(g.mx), int(cols[0] + 0.15 * (cols[-1] - cols[0]))
    # The smile's corners are higher than its middle: so is the opening's top edge.
    top = {c: int(np.argmax(hole[:, c])) for c in (middle, side)}
    assert top[side] < top[middle], top
    # Upper teeth stay whole above the opening: bright rows between the upper inner lip and
    # the opening's top, as in the photo.
    assert photo.landmarks is not None
    inner_top = photo.landmarks.group(LIPS_INNER)[5][1] - patch.box.y1  # mesh point 13
    band = patch.image[int(inner_top) + 1 : top[middle], middle - 8 : middle + 8]
    assert band.shape[0] >= 3 and band.mean() > 150, (band.shape, band.mean())


def width_of_opening(frame: AvatarFrame, shape: MouthShape) -> int:
    hole = dark(frame, render_photo_mouth(frame, shape, teeth=True))
    cols = np.nonzero(hole.sum(axis=0) >= 3)[0]
    return int(cols[-1] - cols[0]) if cols.size else 0


def test_rounded_vowels_narrow_the_mouth_and_spread_ones_widen_it(photo: AvatarFrame) -> None:
    opening = 0.6
    plain = width_of_opening(photo, MouthShape(open=opening, wide=0.0, round=0.0))
    rounded = width_of_opening(photo, MouthShape(open=opening, wide=0.0, round=1.0))
    spread = width_of_opening(photo, MouthShape(open=opening, wide=1.0, round=0.0))
    assert rounded < 0.85 * plain < 0.85 * spread, (rounded, plain, spread)


def test_pressed_lips_stay_closed(photo: AvatarFrame) -> None:
    patch = render_photo_mouth(photo, VISEMES["MBP"], teeth=True)
    # No opening: a few corner-shadow pixels at most (an open mouth shows hundreds).
    assert dark(photo, patch).sum() < 25
    assert changed(photo, patch).any()  # but pressed: the lips thin
