"""Drawn characters: the shipped cartoon, cross-fades, fallbacks and every loader error."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from inference.avatar.cartoon import draw_default_character
from inference.avatar.drawn import (
    SHIPPED_CHARACTER,
    DrawnCharacter,
    fallback_viseme,
    load_drawn_character,
)
from inference.frames import Box
from inference.visemes import VISEME_NAMES


@pytest.fixture(scope="module")
def cartoon_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cartoon")
    draw_default_character(out)
    return out


@pytest.fixture(scope="module")
def cartoon(cartoon_dir: Path) -> DrawnCharacter:
    return load_drawn_character(cartoon_dir)


def _folder_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _imread(path: Path, flags: int) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    assert image is not None, path
    return image


def _edit_spec(folder: Path, **changes: object) -> None:
    spec_path = folder / "character.json"
    spec = json.loads(spec_path.read_text())
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    spec_path.write_text(json.dumps(spec))


# ------------------------------------------------------------------ the default character


def test_default_character_loads(cartoon: DrawnCharacter) -> None:
    assert cartoon.name == "Cartoon"
    assert cartoon.face.shape == (512, 512, 3) and cartoon.face.dtype == np.uint8
    assert cartoon.face_alpha is not None and cartoon.face_alpha.shape == (512, 512)
    assert set(cartoon.mouths) == set(VISEME_NAMES)
    assert cartoon.blink is not None and cartoon.blink.shape == (512, 512, 4)
    box = cartoon.mouth_box()
    assert isinstance(box, Box)
    assert 0 <= box.x1 < box.x2 <= 512 and 0 <= box.y1 < box.y2 <= 512
    assert (box.width, box.height) == cartoon.mouths["rest"].shape[1::-1]


def test_shipped_character_matches_the_generator(cartoon: DrawnCharacter) -> None:
    # The committed folder must be what the generator draws; a tolerance allows for another
    # OpenCV build anti-aliasing a little differently.
    shipped = load_drawn_character(SHIPPED_CHARACTER)
    assert shipped.mouth_box() == cartoon.mouth_box()
    assert np.abs(shipped.face.astype(int) - cartoon.face).mean() < 1.0
    for viseme in VISEME_NAMES:
        a, b = shipped.render_mouth({viseme: 1})[0], cartoon.render_mouth({viseme: 1})[0]
        assert np.abs(a.astype(int) - b).mean() < 1.0, viseme


def test_default_character_is_deterministic(tmp_path: Path, cartoon_dir: Path) -> None:
    draw_default_character(tmp_path / "again")
    assert _folder_hash(tmp_path / "again") == _folder_hash(cartoon_dir)


def test_every_viseme_mouth_looks_different(cartoon: DrawnCharacter) -> None:
    patches = {v: cartoon.render_mouth({v: 1.0})[0].astype(int) for v in VISEME_NAMES}
    for i, a in enumerate(VISEME_NAMES):
        for b in VISEME_NAMES[i + 1 :]:
            changed = (np.abs(patches[a] - patches[b]).max(axis=2) > 40).sum()
            assert changed > 100, f"{a} and {b} differ in only {changed} pixels"


def test_blink_closes_the_eyes_only(cartoon: DrawnCharacter) -> None:
    open_, closed = cartoon.render_face(0.0), cartoon.render_face(1.0)
    diff = np.abs(open_.astype(int) - closed).max(axis=2) > 0
    assert diff.sum() > 1000
    box = cartoon.mouth_box()
    assert not diff[box.y1 : box.y2, box.x1 : box.x2].any()
    assert np.array_equal(open_, cartoon.face)


# ------------------------------------------------------------------------------ rendering


def test_render_mouth_shapes_and_alpha(cartoon: DrawnCharacter) -> None:
    box = cartoon.mouth_box()
    patch, alpha = cartoon.render_mouth({"AA": 1.0})
    assert patch.shape == (box.height, box.width, 3) and patch.dtype == np.uint8
    assert alpha.shape == (box.height, box.width) and alpha.dtype == np.float32
    assert alpha.min() >= 0 and alpha.max() == 1.0
    assert alpha[box.height // 2, box.width // 2] == 1.0 and alpha[0, 0] < 1.0


def test_rest_render_is_the_face_where_the_mouth_is_transparent(
    cartoon: DrawnCharacter,
) -> None:
    box = cartoon.mouth_box()
    patch, _ = cartoon.render_mouth({"rest": 1.0})
    crop = cartoon.face[box.y1 : box.y2, box.x1 : box.x2]
    transparent = cartoon.mouths["rest"][..., 3] == 0
    assert transparent.any()
    assert np.array_equal(patch[transparent], crop[transparent])


def test_empty_or_zero_weights_mean_rest(cartoon: DrawnCharacter) -> None:
    rest = cartoon.render_mouth({"rest": 1.0})[0]
    assert np.array_equal(cartoon.render_mouth({})[0], rest)
    assert np.array_equal(cartoon.render_mouth({"AA": 0.0})[0], rest)


def test_cross_fade_lies_between_the_pure_renders(cartoon: DrawnCharacter) -> None:
    a = cartoon.render_mouth({"AA": 1.0})[0].astype(int)
    b = cartoon.render_mouth({"OO": 1.0})[0].astype(int)
    mix = cartoon.render_mouth({"AA": 0.5, "OO": 0.5})[0].astype(int)
    assert (mix >= np.minimum(a, b) - 1).all() and (mix <= np.maximum(a, b) + 1).all()
    assert np.abs(mix - (a + b) / 2).max() <= 1.0
    assert not np.array_equal(mix, a) and not np.array_equal(mix, b)


def test_weights_are_normalised(cartoon: DrawnCharacter) -> None:
    half = cartoon.render_mouth({"AA": 0.5, "EE": 0.5})[0].astype(int)
    doubled = cartoon.render_mouth({"AA": 2.0, "EE": 2.0})[0].astype(int)
    assert np.abs(half - doubled).max() <= 1


def test_bad_weights_are_refused(cartoon: DrawnCharacter) -> None:
    with pytest.raises(ValueError, match="unknown viseme"):
        cartoon.render_mouth({"XX": 1.0})
    with pytest.raises(ValueError, match="negative"):
        cartoon.render_mouth({"AA": -0.5, "rest": 1.5})


def test_render_frame_pastes_the_mouth(cartoon: DrawnCharacter) -> None:
    frame = cartoon.render_frame({"AA": 1.0})
    box = cartoon.mouth_box()
    patch, _ = cartoon.render_mouth({"AA": 1.0})
    inner = (slice(box.y1 + 5, box.y2 - 5), slice(box.x1 + 5, box.x2 - 5))
    assert np.array_equal(frame[inner], patch[5:-5, 5:-5])
    outside = np.ones(frame.shape[:2], bool)
    outside[box.y1 : box.y2, box.x1 : box.x2] = False
    assert np.array_equal(frame[outside], cartoon.face[outside])


# ------------------------------------------------------------------------------- fallback


def test_fallback_picks_the_nearest_shape() -> None:
    assert fallback_viseme("AA", {"rest", "AA"}) == "AA"
    assert fallback_viseme("AA", {"rest"}) == "rest"
    assert fallback_viseme("MBP", {"rest", "AA"}) == "rest"
    assert fallback_viseme("UU", {"rest", "OO", "EE"}) == "OO"
    assert fallback_viseme("AA", {"rest", "OO", "MBP"}) == "OO"
    assert fallback_viseme("CONS", {"rest", "FV", "AA"}) == "FV"
    with pytest.raises(ValueError, match="unknown viseme"):
        fallback_viseme("XX", {"rest"})


def test_missing_viseme_renders_its_fallback(tmp_path: Path, cartoon_dir: Path) -> None:
    folder = _copy(cartoon_dir, tmp_path / "partial")
    _edit_spec(folder, mouths={"rest": "mouths/rest.png", "OO": "mouths/OO.png"})
    character = load_drawn_character(folder)
    assert set(character.mouths) == {"rest", "OO"}
    assert character.resolve("UU") == "OO" and character.resolve("MBP") == "rest"
    uu = character.render_mouth({"UU": 1.0})[0]
    assert np.array_equal(uu, character.render_mouth({"OO": 1.0})[0])
    mbp = character.render_mouth({"MBP": 1.0})[0]
    assert np.array_equal(mbp, character.render_mouth({"rest": 1.0})[0])


def test_rest_only_character_renders_every_viseme(tmp_path: Path, cartoon_dir: Path) -> None:
    folder = _copy(cartoon_dir, tmp_path / "rest-only")
    _edit_spec(folder, mouths={"rest": "mouths/rest.png"}, blink=None, background=None)
    character = load_drawn_character(folder)
    rest = character.render_mouth({"rest": 1.0})[0]
    for viseme in VISEME_NAMES:
        assert np.array_equal(character.render_mouth({viseme: 1.0})[0], rest)
    # Without a background the transparent face is flattened over white.
    assert character.background is None and (character.face[0, 0] == 255).all()


# --------------------------------------------------------------------------- loader input


def test_rgb_face_and_mouth_scale(tmp_path: Path, cartoon_dir: Path) -> None:
    folder = _copy(cartoon_dir, tmp_path / "rgb")
    face = _imread(folder / "face.png", cv2.IMREAD_COLOR)
    cv2.imwrite(str(folder / "face.png"), face)
    _edit_spec(folder, mouth_scale=0.5)
    character = load_drawn_character(folder)
    assert character.face_alpha is None
    assert np.array_equal(character.face, face)
    assert character.mouths["AA"].shape == (56, 80, 4)
    box = character.mouth_box()
    assert (box.width, box.height) == (80, 56)
    assert (box.x1 + box.x2) / 2 == 256 and (box.y1 + box.y2) / 2 == 352


def _error(folder: Path) -> str:
    with pytest.raises(ValueError) as info:
        load_drawn_character(folder)
    return str(info.value)


def test_error_missing_character_json(tmp_path: Path) -> None:
    assert "no character.json" in _error(tmp_path)


def test_error_bad_json(tmp_path: Path, cartoon_dir: Path) -> None:
    folder = _copy(cartoon_dir, tmp_path / "c")
    (folder / "character.json").write_text('{"name": "x", ')
    assert "not valid JSON" in _error(folder)
    (folder / "character.json").write_text("[1, 2]")
    assert "JSON object" in _error(folder)


def test_error_wrong_kind(tmp_path: Path, cartoon_dir: Path) -> None:
    folder = _copy(cartoon_dir, tmp_path / "c")
    _edit_spec(folder, kind="photo")
    assert '"kind" must be "drawn"' in _error(folder)


def test_error_missing_face(tmp_path: Path, cartoon_dir: Path) -> None:
    folder = _copy(cartoon_dir, tmp_path / "c")
    (folder / "face.png").unlink()
    assert "face image" in _error(folder) and "not found" in _error(folder)
    _edit_spec(folder, face=None)
    assert '"face"' in _error(folder)


def test_error_unreadable_face(tmp_path: Path, cartoon_dir: Path) -> None:
    folder = _copy(cartoon_dir, tmp_path / "c")
    (folder / "face.png").write_bytes(b"not a png")
    assert "not a readable image" in _error(folder)


def test_error_missing_rest_mouth(tmp_path: Path, cartoon_dir: Path) -> None:
    folder = _copy(cartoon_dir, tmp_path / "c")
    _edit_spec(folder, mouths={"AA": "mouths/AA.png"})
    assert 'no "rest"' in _error(folder)


def test_error_missing_mouth_file(tmp_path: Path, cartoon_dir: Path) -> None:
    folder = _copy(cartoon_dir, tmp_path / "c")
    (folder / "mouths" / "EE.png").unlink()
    message = _error(folder)
    assert "mouth 'EE'" in message and "not found" in message


def test_error_unknown_viseme(tmp_path: Path, cartoon_dir: Path) -> None:
    folder = _copy(cartoon_dir, tmp_path / "c")
    _edit_spec(folder, mouths={"rest": "mouths/rest.png", "OH": "mouths/OO.png"})
    assert 'unknown viseme "OH"' in _error(folder)


def test_error_mouths_of_different_sizes(tmp_path: Path, cartoon_dir: Path) -> None:
    folder = _copy(cartoon_dir, tmp_path / "c")
    aa = _imread(folder / "mouths" / "AA.png", cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(folder / "mouths" / "AA.png"), aa[:-10])
    message = _error(folder)
    assert "same size" in message or "one size" in message
    assert "AA.png" in message


def test_error_mouth_without_alpha(tmp_path: Path, cartoon_dir: Path) -> None:
    folder = _copy(cartoon_dir, tmp_path / "c")
    aa = _imread(folder / "mouths" / "AA.png", cv2.IMREAD_COLOR)
    cv2.imwrite(str(folder / "mouths" / "AA.png"), aa)
    assert "no alpha channel" in _error(folder)


@pytest.mark.parametrize("anchor", [[600, 300], [256, -5], [-1, 10]])
def test_error_anchor_outside_the_image(
    tmp_path: Path, cartoon_dir: Path, anchor: list[int]
) -> None:
    folder = _copy(cartoon_dir, tmp_path / "c")
    _edit_spec(folder, mouth_anchor=anchor)
    assert "outside the 512x512 face" in _error(folder)


def test_error_mouth_box_past_the_edge(tmp_path: Path, cartoon_dir: Path) -> None:
    folder = _copy(cartoon_dir, tmp_path / "c")
    _edit_spec(folder, mouth_anchor=[20, 300])
    assert "reaches outside" in _error(folder)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("mouth_anchor", [1, 2, 3], '"mouth_anchor" must be [x, y]'),
        ("mouth_anchor", "middle", '"mouth_anchor" must be [x, y]'),
        ("mouth_scale", 0, '"mouth_scale" must be a positive'),
        ("mouths", ["rest.png"], '"mouths" must map'),
        ("background", [1, 2], '"background" must be [B, G, R]'),
        ("name", 5, '"name" must be a string'),
        ("blink", 3, '"blink" must name'),
    ],
)
def test_error_bad_fields(
    tmp_path: Path, cartoon_dir: Path, field: str, value: object, expected: str
) -> None:
    folder = _copy(cartoon_dir, tmp_path / "c")
    _edit_spec(folder, **{field: value})
    assert expected in _error(folder)


def test_error_blink_of_the_wrong_size(tmp_path: Path, cartoon_dir: Path) -> None:
    folder = _copy(cartoon_dir, tmp_path / "c")
    blink = _imread(folder / "blink.png", cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(folder / "blink.png"), blink[:256])
    assert "blink must match the face" in _error(folder)
