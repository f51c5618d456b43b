"""Avatar preparation (detection, pads, smoothing, the content-hash cache) and the store."""

from __future__ import annotations

import itertools
import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from config import PROJECT_ROOT
from inference.avatar import prepare as prep
from inference.avatar.prepare import NoFaceError, PreparedMedia, content_hash, prepare
from inference.avatar.store import Avatar, AvatarStore, load_avatar
from inference.frames import AvatarFrame, Box, MouthGeometry
from tests.media import encode_video

ASTRONAUT = PROJECT_ROOT / "avatars" / "astronaut.jpg"
CARTOON = PROJECT_ROOT / "avatars" / "cartoon"


def _entry(cache: Path, path: Path) -> Path:
    return cache / f"{content_hash(path)[:32]}.json"


def _imread(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, path
    return image


def _copy(path: Path, folder: Path, name: str | None = None) -> Path:
    target = folder / (name or path.name)
    shutil.copyfile(path, target)
    return target


def test_astronaut_face_and_mouth_are_plausible(tmp_path: Path) -> None:
    media = prepare(ASTRONAUT, tmp_path)
    assert len(media.frames) == len(media.boxes) == len(media.mouths) == 1
    image = media.frames[0]
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in media.boxes[0])
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    assert x2 - x1 >= w // 5 and y2 - y1 >= h // 5  # a portrait: the face is big
    cx, cy, half, lip, chin = (float(v) for v in media.mouths[0])
    # The mouth sits in the lower half of the face box, horizontally inside it.
    assert (y1 + y2) / 2 < cy < y2
    assert x1 < cx - half < cx + half < x2
    assert 0 < lip < (y2 - y1) / 4
    assert cy < chin <= y2 + 0.1 * (y2 - y1)
    # Pads (0, 10, 0, 0): the box reaches below the chin line.
    assert y2 > chin


def test_second_prepare_uses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = prepare(ASTRONAUT, tmp_path)
    entry = _entry(tmp_path, ASTRONAUT)
    assert entry.is_file()
    assert json.loads(entry.read_text())["sha256"] == content_hash(ASTRONAUT)

    def no_detection(*_: object, **__: object) -> PreparedMedia:
        raise AssertionError("detection ran although the cache holds this file")

    monkeypatch.setattr(prep, "detect", no_detection)
    second = prepare(ASTRONAUT, tmp_path)
    assert np.array_equal(first.boxes, second.boxes)
    assert np.allclose(first.mouths, second.mouths, atol=0.01)
    assert np.array_equal(first.frames[0], second.frames[0])


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong-shape", "other-version"])
def test_damaged_cache_is_rebuilt(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    good = prepare(ASTRONAUT, cache)
    entry = _entry(cache, ASTRONAUT)
    meta = json.loads(entry.read_text())
    if damage == "garbage":
        entry.write_bytes(b"\x00\xffnot json at all")
    elif damage == "truncated":
        entry.write_text(entry.read_text()[:40])
    elif damage == "wrong-shape":
        entry.write_text(json.dumps(meta | {"boxes": [[1, 2, 3]], "mouths": "x"}))
    else:
        entry.write_text(json.dumps(meta | {"version": -1, "boxes": [[0, 0, 2, 2]]}))
    with caplog.at_level(logging.WARNING):
        again = prepare(ASTRONAUT, cache)
    assert np.array_equal(again.boxes, good.boxes)
    assert json.loads(entry.read_text()) == meta  # the entry was written afresh
    assert any("preparing again" in r.getMessage() for r in caplog.records)


def test_edited_file_is_prepared_again(tmp_path: Path) -> None:
    photo = _copy(ASTRONAUT, tmp_path)
    cache = tmp_path / "cache"
    prepare(photo, cache)
    image = _imread(photo)
    cv2.imwrite(str(photo), np.ascontiguousarray(image[:, ::-1]))  # mirrored: new content
    mirrored = prepare(photo, cache)
    assert len(list(cache.glob("*.json"))) == 2
    w = image.shape[1]
    x1, _, x2, _ = mirrored.boxes[0]
    cx = float(mirrored.mouths[0][0])
    assert x1 < cx < x2 < w


@pytest.mark.parametrize("kind", ["flat", "noise", "gradient"])
def test_picture_without_a_face_says_so(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(0)
    if kind == "flat":
        image = np.full((300, 400, 3), (90, 160, 200), np.uint8)
    elif kind == "noise":
        image = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    else:
        image = np.repeat(np.linspace(0, 255, 400, dtype=np.uint8)[None, :, None], 300, 0)
        image = np.repeat(image, 3, axis=2)
    path = tmp_path / f"{kind}.png"
    cv2.imwrite(str(path), image)
    with pytest.raises(NoFaceError) as info:
        prepare(path, tmp_path / "cache")
    message = str(info.value)
    assert "no face found" in message and str(path) in message
    assert "frontal face" in message  # says what kind of picture works
    assert "\n" not in message
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.json"))


def test_unreadable_or_unsupported_files_are_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(ValueError, match="not a readable image"):
        prepare(broken, tmp_path / "cache")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="unsupported avatar type"):
        prepare(text, tmp_path / "cache")


def _shifted_loop(tmp_path: Path, shifts: list[int]) -> Path:
    image = _imread(ASTRONAUT)
    frames = []
    for dx in shifts:
        matrix = np.array([[1, 0, dx], [0, 1, dx // 2]], np.float32)
        frames.append(
            cv2.warpAffine(
                image, matrix, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REPLICATE
            )
        )
    return encode_video(tmp_path / "loop.mp4", frames)


def test_video_loop_prepares_with_smoothed_boxes(tmp_path: Path) -> None:
    # A slow drift to the right with a jitter of +-4 px on top, as a hand-held camera gives.
    shifts = [2 * i + (4 if i % 2 else -4) for i in range(12)]
    video = _shifted_loop(tmp_path, shifts)
    media = prepare(video, tmp_path / "cache")
    assert len(media.frames) == len(media.boxes) == len(media.mouths) == len(shifts)
    x1 = media.boxes[:, 0].astype(np.float64)
    # Smoothing (mean over the next five frames) follows the drift ...
    assert x1[-1] > x1[0] + 8
    # ... but not the jitter: a box that followed every shift would move 8 px each frame.
    steps = np.abs(np.diff(x1[: len(shifts) - prep.SMOOTH_FRAMES]))
    assert steps.max() <= 4
    raw_variation = np.abs(np.diff(shifts)).sum()
    assert np.abs(np.diff(x1)).sum() < raw_variation / 2
    # Every box stays inside its frame and around its mouth.
    h, w = media.frames[0].shape[:2]
    for (bx1, by1, bx2, by2), (cx, cy, *_rest) in zip(media.boxes, media.mouths, strict=True):
        assert 0 <= bx1 < cx < bx2 <= w and 0 <= by1 < cy < by2 <= h
    avatar = load_avatar(video, tmp_path / "cache")
    assert avatar.kind == "photo" and len(avatar.frames) == len(shifts)


def _frames(n: int) -> tuple[AvatarFrame, ...]:
    mouth = MouthGeometry(8.0, 12.0, 3.0, 2.0, 15.0)
    return tuple(
        AvatarFrame(image=np.full((16, 16, 3), i, np.uint8), box=Box(0, 0, 16, 16), mouth=mouth)
        for i in range(n)
    )


def test_frame_at_plays_the_loop_forwards_then_backwards() -> None:
    def order(n: int, count: int) -> list[int]:
        avatar = Avatar(name="loop", kind="photo", frames=_frames(n))
        return [int(avatar.frame_at(i).image[0, 0, 0]) for i in range(count)]

    assert order(1, 5) == [0, 0, 0, 0, 0]
    assert order(2, 6) == [0, 1, 0, 1, 0, 1]
    assert order(4, 14) == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1]
    # Consecutive frames never jump by more than one step of the loop.
    sequence = order(5, 40)
    assert max(abs(a - b) for a, b in itertools.pairwise(sequence)) == 1


def test_store_skips_broken_user_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "avatars"
    folder.mkdir()
    _copy(ASTRONAUT, folder)
    _copy(ASTRONAUT, folder, "toothless.jpg")
    (folder / "toothless.json").write_text('{"teeth": false}')
    shutil.copytree(CARTOON, folder / "cartoon")
    (folder / "broken.jpg").write_bytes(b"not an image")
    cv2.imwrite(str(folder / "wall.png"), np.full((200, 200, 3), 128, np.uint8))
    (folder / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    (folder / "bad-sidecar.jpg").write_bytes(ASTRONAUT.read_bytes())
    (folder / "bad-sidecar.json").write_text("{teeth: no}")
    (folder / "half-drawn").mkdir()
    (folder / "half-drawn" / "character.json").write_text('{"kind": "drawn"}')
    (folder / "README.txt").write_text("not an avatar")
    (folder / "empty-dir").mkdir()

    with caplog.at_level(logging.ERROR):
        store = AvatarStore.load(folder, tmp_path / "cache", default="astronaut")
    assert store.names() == ["astronaut", "cartoon", "toothless"]
    assert store.default == "astronaut"
    assert store.get(None).name == "astronaut"
    assert store.get("toothless").teeth is False
    assert all(not f.teeth for f in store.get("toothless").frames)
    assert store.get("astronaut").teeth is True
    assert store.get("cartoon").kind == "drawn"
    skipped = " ".join(r.getMessage() for r in caplog.records)
    for name in ("broken.jpg", "wall.png", "clip.mp4", "bad-sidecar.jpg", "half-drawn"):
        assert name in skipped
    described = {d["name"]: d for d in store.describe()}
    assert described["astronaut"]["default"] is True
    assert described["cartoon"]["kind"] == "drawn"


def test_store_default_falls_back_to_a_loaded_avatar(avatar_store: AvatarStore) -> None:
    avatars = {name: avatar_store.get(name) for name in avatar_store.names()}
    assert AvatarStore(avatars, default="nobody").default == "astronaut"
    with pytest.raises(ValueError, match="no avatars"):
        AvatarStore({}, default="astronaut")


def test_unknown_avatar_lists_the_names(avatar_store: AvatarStore) -> None:
    with pytest.raises(ValueError) as info:
        avatar_store.get("grandma")
    message = str(info.value)
    assert "'grandma'" in message
    assert "astronaut" in message and "cartoon" in message


def test_shipped_avatars_load(avatar_store: AvatarStore) -> None:
    photo, drawn = avatar_store.get("astronaut"), avatar_store.get("cartoon")
    assert photo.kind == "photo" and photo.character is None and photo.teeth
    assert drawn.kind == "drawn" and drawn.character is not None and not drawn.teeth
    for avatar in (photo, drawn):
        frame = avatar.frames[0]
        h, w = frame.image.shape[:2]
        assert frame.image.dtype == np.uint8 and frame.image.shape[2] == 3
        assert h % 2 == 0 and w % 2 == 0  # H.264 needs even sizes
        assert not frame.image.flags.writeable  # shared by every request
        assert 0 <= frame.box.x1 < frame.box.x2 <= w and 0 <= frame.box.y1 < frame.box.y2 <= h
    # The drawn avatar's idle picture blinks now and then, and is its face otherwise.
    idle = [drawn.idle_image(i) for i in range(0, 100)]
    blinking = [i for i, image in enumerate(idle) if not np.array_equal(image, idle[10])]
    assert blinking and len(blinking) <= 8
    assert np.array_equal(idle[10], drawn.frames[0].image)


def test_blink_pictures_are_drawn_once_and_shared(avatar_store: AvatarStore) -> None:
    """The same array for every blink frame of one closure, every period: the live pipeline
    caches conversions by identity, and a new array per blink frame filled that cache with
    dead entries (up to ~75 MB per session with the cartoon) without a single hit."""
    drawn = avatar_store.get("cartoon")
    period = 100  # BLINK_PERIOD (4 s) at 25 fps
    first = [drawn.idle_image(i) for i in range(period)]
    again = [drawn.idle_image(i + 7 * period) for i in range(period)]
    assert all(a is b for a, b in zip(first, again, strict=True))
    assert len({id(image) for image in first + again}) <= 3  # open, half and fully closed
    assert not any(image.flags.writeable for image in first)


def test_an_opencv_without_haar_cascades_skips_photos_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """OpenCV 5 wheels have no CascadeClassifier: photos are skipped (the drawn character
    still loads), the log says what to install, and a photo prepared before still loads."""
    folder = tmp_path / "avatars"
    folder.mkdir()
    photo = _copy(PROJECT_ROOT / "avatars" / "astronaut.jpg", folder)
    shutil.copytree(PROJECT_ROOT / "avatars" / "cartoon", folder / "cartoon")
    prepared = tmp_path / "prepared"
    prepare(photo, prepared)  # with this machine's OpenCV 4
    monkeypatch.delattr(cv2, "CascadeClassifier")
    with caplog.at_level(logging.ERROR):
        store = AvatarStore.load(folder, tmp_path / "fresh", "astronaut")
    assert store.names() == ["cartoon"]
    assert "has no Haar cascades" in caplog.text and "opencv-python-headless<5" in caplog.text
    assert AvatarStore.load(folder, prepared, "astronaut").names() == ["astronaut", "cartoon"]
