"""A still photo's head sway and breathing (inference/avatar/sway.py, moving.py): the same
frames for the same seed, small, smooth, measured on the pictures themselves (phase
correlation, tracked features); the live path's shortcut (one warp of the photo per step,
each frame's changed region on its own) equals a warp of each whole frame. Where it is
applied (pipeline, switches, render): tests/test_head_motion_pipeline.py."""

from __future__ import annotations

import math

import av
import cv2
import numpy as np
import pytest

from inference.avatar.moving import MovingPhoto
from inference.avatar.sway import BREATH, SHIFT, STEP, TILT_DEGREES, HeadMotion
from inference.mp4 import bgr_to_video_frame, i420_to_video_frame, video_frame_planes
from rtc.live.motion import session_seed
from rtc.live.options import PipelineOptions

SIZE = (512, 512)
CENTRE = (248.5, 215.0)
"""The shipped photo's face centre, roughly."""
TEN_SECONDS = 250


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    return make_texture()


def make_texture() -> np.ndarray:
    """A 512x512 BGR picture with detail at every scale (phase correlation and feature
    tracking need it)."""
    rng = np.random.default_rng(3)
    noise = rng.normal(128, 60, (SIZE[1], SIZE[0], 3)).astype(np.float32)
    image = cv2.GaussianBlur(noise, (0, 0), 2.0) * 2.0 - 128
    for _ in range(40):
        x, y = (int(v) for v in rng.integers(0, 512, 2))
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.circle(image, (x, y), int(rng.integers(5, 40)), colour, -1)
    return np.clip(image, 0, 255).astype(np.uint8)


def i420(image: np.ndarray) -> np.ndarray:
    """OpenCV's (h * 3/2, w) I420 array of a BGR picture."""
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), dtype=np.uint8)


def rest(motion: HeadMotion, image: np.ndarray) -> np.ndarray:
    """The luma of ``image`` under the motion's constant zoom alone: the head at rest."""
    width, height = motion.size
    zoom = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), 0.0, motion.zoom)
    luma = i420(image)[:height]
    return np.asarray(cv2.warpAffine(luma, zoom, motion.size, flags=cv2.INTER_LINEAR))


def face_shift(reference: np.ndarray, moved: np.ndarray) -> tuple[float, float]:
    """The picture's shift (x, y) around the face centre, by phase correlation of lumas."""
    x, y = (int(v) for v in CENTRE)
    crop = (slice(y - 96, y + 96), slice(x - 96, x + 96))
    window = cv2.createHanningWindow((192, 192), cv2.CV_32F)
    a, b = (np.asarray(p[crop], np.float32) for p in (reference, moved))
    (dx, dy), _ = cv2.phaseCorrelate(a, b, window)
    return dx, dy


def tilt_of(reference: np.ndarray, moved: np.ndarray) -> float:
    """The picture's rotation in degrees (OpenCV's sign), from features tracked in luma."""
    points = cv2.goodFeaturesToTrack(reference, 300, 0.01, 12)
    moved_points, status, _ = cv2.calcOpticalFlowPyrLK(reference, moved, points, points.copy())
    ok = status.ravel() == 1
    m, _ = cv2.estimateAffinePartial2D(points[ok], moved_points[ok])
    return -math.degrees(math.atan2(m[1, 0], m[0, 0]))


def expected_face_shift(motion: HeadMotion, index: int) -> np.ndarray:
    """Where the face centre goes in frame ``index``, against where the zoom alone puts it."""
    centre = np.array([*CENTRE, 1.0])
    width, height = motion.size
    zoom = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), 0.0, motion.zoom)
    return np.asarray(motion.matrix(index) @ centre - zoom @ centre)


# --- the motion -------------------------------------------------------------------------


def test_same_seed_same_frames_other_seed_other_motion(texture: np.ndarray) -> None:
    a, b, c = (MovingPhoto(HeadMotion(seed, SIZE, CENTRE), texture) for seed in (5, 5, 6))
    yuv = i420(texture)
    for index in (0, 37, 200):
        np.testing.assert_array_equal(a.moved(yuv, index), b.moved(yuv, index))
    poses = [(a.motion.pose(i), c.motion.pose(i)) for i in range(0, TEN_SECONDS, 25)]
    assert all(p != q for p, q in poses)
    assert not np.array_equal(a.moved(yuv, 100), c.moved(yuv, 100))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_at_rest_the_head_moves_within_bounds_and_smoothly(texture: np.ndarray, seed: int) -> None:
    """Over 10 s the picture's measured shift and tilt vary, stay within the stated bounds,
    follow the pose, and change by a fraction of a pixel from one frame to the next."""
    motion = HeadMotion(seed, SIZE, CENTRE)
    moving, yuv = MovingPhoto(motion, texture), i420(texture)
    reference = rest(motion, texture)
    shifts, tilts = [], []
    for index in range(0, TEN_SECONDS):
        moved = moving.moved(yuv, index)[: SIZE[1]]
        shift = face_shift(reference, moved)
        # Phase correlation errs by up to 0.2 px itself (its peak leans to whole pixels).
        np.testing.assert_allclose(shift, expected_face_shift(motion, index), atol=0.3)
        shifts.append(shift)
        if index % 10 == 0:
            tilt = tilt_of(reference, moved)
            assert tilt == pytest.approx(motion.pose(index).tilt, abs=0.05)
            tilts.append(tilt)
    xs, ys = np.array(shifts).T
    # Drift 1.5 px a side; up and down also the breath's lift (0.9 px at the face).
    assert np.abs(xs).max() <= 1.6 and np.abs(ys).max() <= 2.5
    assert np.abs(tilts).max() <= 0.6  # well under a degree
    assert np.ptp(xs) > 0.3 and np.ptp(ys) > 0.3 and np.ptp(tilts) > 0.1  # it does move
    steps = np.hypot(np.diff(xs), np.diff(ys))
    assert steps.max() <= 0.4, steps.max()  # no jump
    # A pose lasts STEP frames: the frames of a step are one picture.
    assert all(steps[i] < 0.02 for i in range(TEN_SECONDS - 1) if (i + 1) % STEP)


def test_the_bounds_hold_for_every_seed() -> None:
    """Poses never leave their bounds, and the zoom keeps every pixel a frame shows inside
    the photo, so no border can appear (checked on the transform of the frame's corners)."""
    width, height = SIZE
    corners = np.array([[-0.5, -0.5, 1], [width - 0.5, -0.5, 1], [-0.5, height - 0.5, 1],
                        [width - 0.5, height - 0.5, 1]]).T  # fmt: skip
    edges = np.array([[x, y, 1.0] for x in (-0.5, width / 2, width - 0.5)
                      for y in (-0.5, height / 2, height - 0.5)]).T  # fmt: skip
    for seed in range(20):
        motion = HeadMotion(seed, SIZE, CENTRE)
        assert 1.0 < motion.zoom < 1.03
        for index in range(0, 25 * 60, 7):
            pose = motion.pose(index)
            assert abs(pose.tilt) <= TILT_DEGREES
            assert max(abs(pose.shift_x), abs(pose.shift_y)) <= SHIFT * height
            assert 1.0 <= pose.breath <= 1.0 + BREATH
            inverse = cv2.invertAffineTransform(motion.matrix(index))
            for points in (corners, edges):
                source = inverse @ points
                assert source.min() >= -0.5 and source[0].max() <= width - 0.5
                assert source[1].max() <= height - 0.5


# --- the live path ----------------------------------------------------------------------


def whole_warp(motion: HeadMotion, frame: av.VideoFrame, index: int) -> list[np.ndarray]:
    """Every plane of ``frame`` warped whole: what the live path's shortcut must equal."""
    luma, chroma = motion.plane_matrices(index)
    return [
        np.asarray(
            cv2.warpAffine(
                plane,
                chroma if k else luma,
                (plane.shape[1], plane.shape[0]),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REPLICATE,
            )
        )
        for k, plane in enumerate(video_frame_planes(frame))
    ]


def assert_planes_close(got: av.VideoFrame, want: list[np.ndarray], levels: int = 6) -> None:
    """Equal up to the rounding of sample positions where a region was warped on its own:
    a few levels, on a few pixels at strong edges."""
    for plane, reference in zip(video_frame_planes(got), want, strict=True):
        diff = np.abs(plane.astype(np.int16) - reference)
        assert diff.max() <= levels and np.count_nonzero(diff) <= 64, (diff.max(), diff.sum())


def test_live_frames_equal_a_whole_warp(texture: np.ndarray) -> None:
    """The photo, a picture changed in a box (a mouth), one changed everywhere (a dissolve):
    each as the whole frame warped, with the photo warped once per step."""
    motion = HeadMotion(4, SIZE, CENTRE)
    moving = MovingPhoto(motion, texture)
    mouth = texture.copy()
    mouth[270:330, 200:300] = 255 - mouth[270:330, 200:300]
    hue = np.asarray(cv2.cvtColor(texture, cv2.COLOR_BGR2YUV_I420), dtype=np.uint8)
    u_rows = slice(SIZE[1] + 60, SIZE[1] + 80)  # U rows 120-160 as (h/2 * w/2) bytes
    hue[u_rows] = 255 - hue[u_rows]  # the colour changes, the luma does not
    pictures = [bgr_to_video_frame(p) for p in (texture, mouth, 255 - texture)]
    pictures.append(i420_to_video_frame(hue))
    for index in range(0, 12):
        for frame in pictures:
            out = av.VideoFrame(*SIZE, "yuv420p")
            moving.warp(video_frame_planes(frame), video_frame_planes(out), index)
            assert_planes_close(out, whole_warp(motion, frame, index))
    assert len(moving) == 12 // STEP  # one warp of the photo per step
    fresh = MovingPhoto(motion, texture)
    out = av.VideoFrame(*SIZE, "yuv420p")
    fresh.warp(video_frame_planes(pictures[2]), video_frame_planes(out), 30)
    assert len(fresh) == 0  # a dissolve is warped whole, without the photo's warp


def test_colour_stays_on_its_pixels(texture: np.ndarray) -> None:
    """The chroma planes (half scale) move with the luma: a moved frame shows the moved
    picture's colours, up to the 4:2:0 subsampling's own error."""
    moving = MovingPhoto(HeadMotion(8, SIZE, CENTRE), texture)
    frame = bgr_to_video_frame(texture)
    for index in (0, 90, 200):
        out = av.VideoFrame(*SIZE, "yuv420p")
        moving.warp(video_frame_planes(frame), video_frame_planes(out), index)
        # The picture warped in BGR, then subsampled: where its colours belong.
        matrix = moving.motion.matrix(index)
        warped = cv2.warpAffine(texture, matrix, SIZE, borderMode=cv2.BORDER_REPLICATE)
        want = video_frame_planes(bgr_to_video_frame(np.asarray(warped, dtype=np.uint8)))
        for plane, reference in zip(video_frame_planes(out)[1:], want[1:], strict=True):
            assert np.abs(plane.astype(np.int16) - reference).mean() < 1.5


def test_session_seed_is_stable_and_overridable() -> None:
    options = PipelineOptions()
    assert session_seed("abc", options) == session_seed("abc", options)
    assert session_seed("abc", options) != session_seed("abd", options)
    assert session_seed("abc", PipelineOptions(motion_seed=9)) == 9
