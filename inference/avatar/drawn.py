"""Drawn 2D characters: a face picture plus one mouth picture per viseme.

Folder format (also in docs/avatars.md, "Drawn characters")::

    my-character/
      character.json
      face.png            the character, mouth area left as it should look under the mouths
      blink.png           optional: eyes-closed overlay, RGBA, same size as face.png
      mouths/rest.png     one RGBA picture per viseme, all the same size
      mouths/AA.png ...

``character.json``::

    {"name": "Cartoon", "kind": "drawn", "face": "face.png",
     "mouth_anchor": [256, 352],          # face pixel (x, y) the mouth pictures are centred on
     "mouth_scale": 1.0,                  # optional (default 1.0), resizes every mouth picture
     "mouths": {"rest": "mouths/rest.png", "MBP": "mouths/MBP.png", ...},
     "blink": "blink.png",                # optional
     "background": [235, 222, 205]}       # optional [B, G, R] behind a transparent face

- ``face.png`` is RGB or RGBA. An RGBA face is flattened over ``background`` (white when
  absent); its alpha stays available as :attr:`DrawnCharacter.face_alpha`.
- Mouth pictures are RGBA PNGs drawn ON TOP of the face: alpha is the mouth's shape and the
  transparent parts show the face below. The scaled mouth box must lie inside the face.
- Viseme names are those of :data:`inference.visemes.VISEMES`. Only ``rest`` is required; a
  missing viseme uses the supplied one whose :class:`~inference.visemes.MouthShape` is nearest
  (Euclidean distance over open, wide, round, press; ties go to the earlier name in VISEMES).
- Paths in ``character.json`` are relative to the folder.

``python -m inference.avatar.drawn OUT_DIR`` redraws the project's own character (shipped in
``avatars/cartoon``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from inference.frames import Box
from inference.visemes import VISEME_NAMES, VISEMES

log = logging.getLogger(__name__)

SHIPPED_CHARACTER = Path(__file__).resolve().parents[2] / "avatars" / "cartoon"
"""Where the project's own character lives in the repository."""

_FEATHER = 3
"""Pixels over which the mouth patch's alpha ramps down at the box edges."""

Color = tuple[int, int, int]


def fallback_viseme(name: str, available: Iterable[str]) -> str:
    """The viseme in ``available`` standing in for ``name``: itself, or the nearest shape.

    Distance is Euclidean over (open, wide, round, press) of :data:`VISEMES`; ties go to the
    name that comes first in ``VISEMES``.
    """
    have = set(available)
    if name in have:
        return name
    if name not in VISEMES:
        raise ValueError(f"unknown viseme {name!r}; expected one of {', '.join(VISEME_NAMES)}")
    target = VISEMES[name]

    def distance(other: str) -> float:
        shape = VISEMES[other]
        return math.dist(
            (target.open, target.wide, target.round, target.press),
            (shape.open, shape.wide, shape.round, shape.press),
        )

    candidates = [v for v in VISEME_NAMES if v in have]
    if not candidates:
        raise ValueError("no known viseme is available to fall back on")
    return min(candidates, key=distance)  # min keeps the first of equals: VISEMES order


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy fields with == is ambiguous
class DrawnCharacter:
    """A loaded drawn character, ready to render mouths fast.

    Arrays are never modified after construction; treat them as read-only.
    """

    name: str
    face: np.ndarray
    """uint8 BGR (H, W, 3): the face, already flattened over the background."""
    face_alpha: np.ndarray | None
    """float32 (H, W) in [0, 1] when face.png had alpha, else None."""
    mouths: dict[str, np.ndarray]
    """Supplied visemes only: float32 PREMULTIPLIED BGRA (h, w, 4), all channels in [0, 1],
    already scaled by ``mouth_scale``; every entry the same shape; ``rest`` always present."""
    mouth_anchor: tuple[float, float]
    """Face pixel (x, y) on which the mouth pictures are centred."""
    blink: np.ndarray | None = None
    """float32 premultiplied BGRA (H, W, 4) in [0, 1]: the eyes-closed overlay, or None."""
    background: Color | None = None
    """B, G, R behind a transparent face (None: white was used)."""
    _resolved: dict[str, np.ndarray] = field(init=False, repr=False)
    _crop: np.ndarray = field(init=False, repr=False)
    _edge: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.face.dtype != np.uint8 or self.face.ndim != 3 or self.face.shape[2] != 3:
            raise ValueError(f"face must be uint8 BGR (H, W, 3), got {self.face.dtype} "
                             f"{self.face.shape}")
        if "rest" not in self.mouths:
            raise ValueError('no "rest" mouth; it is the one viseme every character needs')
        shapes = {m.shape for m in self.mouths.values()}
        if len(shapes) != 1 or next(iter(shapes))[2:] != (4,):
            raise ValueError(f"mouths must all be (h, w, 4) of one size, got {sorted(shapes)}")
        height, width = self.face.shape[:2]
        ax, ay = self.mouth_anchor
        if not (0 <= ax < width and 0 <= ay < height):
            raise ValueError(f"mouth_anchor ({ax:g}, {ay:g}) is outside the {width}x{height} "
                             "face; give the pixel (x, y) at the centre of the mouth")
        box = self.mouth_box()
        if box.x1 < 0 or box.y1 < 0 or box.x2 > width or box.y2 > height:
            raise ValueError(f"mouth box {tuple(box)} reaches outside the {width}x{height} face; "
                             "move mouth_anchor inwards or lower mouth_scale")
        resolved = {v: self.mouths[fallback_viseme(v, self.mouths)] for v in VISEME_NAMES}
        crop = self.face[box.y1:box.y2, box.x1:box.x2].astype(np.float32) / 255.0
        # Feathering the box edge hides the seam if the frame under the patch was changed
        # (colour grading, an idle motion); over the plain face it changes nothing because the
        # patch already holds the face wherever the mouths are transparent.
        ramp_y = np.minimum(np.arange(box.height), np.arange(box.height)[::-1]) + 1
        ramp_x = np.minimum(np.arange(box.width), np.arange(box.width)[::-1]) + 1
        edge = np.minimum.outer(ramp_y, ramp_x).astype(np.float32) / (_FEATHER + 1)
        edge = np.minimum(edge, 1.0)
        edge.flags.writeable = False
        object.__setattr__(self, "_resolved", resolved)
        object.__setattr__(self, "_crop", crop)
        object.__setattr__(self, "_edge", edge)

    @property
    def size(self) -> tuple[int, int]:
        """Face (width, height) in pixels."""
        return self.face.shape[1], self.face.shape[0]

    def mouth_box(self) -> Box:
        """Where the mouth pictures are pasted on the face (half-open pixel box)."""
        h, w = self.mouths["rest"].shape[:2]
        x1 = round(self.mouth_anchor[0] - w / 2)
        y1 = round(self.mouth_anchor[1] - h / 2)
        return Box(x1, y1, x1 + w, y1 + h)

    def resolve(self, viseme: str) -> str:
        """The supplied viseme that is drawn for ``viseme`` (see :func:`fallback_viseme`)."""
        return fallback_viseme(viseme, self.mouths)

    def render_mouth(self, weights: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """Cross-fade the viseme mouths by ``weights`` and composite them over the face.

        The blend is the weighted sum of the premultiplied mouths (weights are normalised to
        sum 1; all-zero or empty means ``rest``), laid over the face crop under
        :meth:`mouth_box`. Returns ``(patch, alpha)``: uint8 BGR of the box size, and float32
        (h, w) that is 1 inside the box and ramps to 0 over its outer few pixels. ``alpha`` is
        shared between calls and read-only.
        """
        picked: list[tuple[float, np.ndarray]] = []
        total = 0.0
        for name, weight in weights.items():
            mouth = self._resolved.get(name)
            if mouth is None:
                raise ValueError(f"unknown viseme {name!r}; expected one of "
                                 f"{', '.join(VISEME_NAMES)}")
            if weight < 0:
                raise ValueError(f"viseme weight for {name!r} is negative ({weight})")
            if weight > 0:
                picked.append((float(weight), mouth))
                total += weight
        if not picked:
            blend = self._resolved["rest"]
        elif len(picked) == 1:
            blend = picked[0][1]
        else:
            blend = picked[0][1] * np.float32(picked[0][0] / total)
            for weight, mouth in picked[1:]:
                blend += mouth * np.float32(weight / total)
        out = blend[..., :3] + (1.0 - blend[..., 3:]) * self._crop
        patch = np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return patch, self._edge

    def render_face(self, blink: float = 0.0) -> np.ndarray:
        """The face (uint8 BGR copy) with the blink overlay at opacity ``blink`` in [0, 1]."""
        image = self.face.copy()
        if self.blink is None or blink <= 0:
            return image
        over = self.blink * np.float32(min(blink, 1.0))
        mixed = over[..., :3] * 255.0 + (1.0 - over[..., 3:]) * image
        return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)

    def render_frame(self, weights: Mapping[str, float], blink: float = 0.0) -> np.ndarray:
        """A whole picture: :meth:`render_face` with :meth:`render_mouth` pasted in."""
        image = self.render_face(blink)
        patch, alpha = self.render_mouth(weights)
        box = self.mouth_box()
        under = image[box.y1:box.y2, box.x1:box.x2].astype(np.float32)
        mixed = patch * alpha[..., None] + under * (1.0 - alpha[..., None])
        image[box.y1:box.y2, box.x1:box.x2] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
        return image


# ---------------------------------------------------------------------------------- loading


def _read_image(path: Path, what: str) -> np.ndarray:
    """uint8 BGR or BGRA pixels of an image file, or a ValueError naming ``what``."""
    if not path.is_file():
        raise ValueError(f"{what} {path} not found")
    # imdecode(fromfile) instead of imread: imread cannot open non-ASCII paths on Windows.
    image: np.ndarray | None = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"{what} {path} is not a readable image; save it as PNG")
    if image.dtype == np.uint16:  # 16-bit PNGs: keep the top byte
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image


def _premultiplied(image: np.ndarray, what: str, path: Path) -> np.ndarray:
    """Straight uint8 BGRA to premultiplied float32 BGRA in [0, 1]."""
    if image.shape[2] != 4:
        raise ValueError(f"{what} {path} has no alpha channel; save it as an RGBA PNG whose "
                         "transparent pixels show the face below")
    out = image.astype(np.float32) / 255.0
    out[..., :3] *= out[..., 3:]
    return out



@dataclass(frozen=True)
class _Spec:
    """character.json after type checks; file names still relative to the folder."""

    name: str
    face: str
    anchor: tuple[float, float]
    scale: float
    mouths: dict[str, str]
    blink: str | None
    background: Color | None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse_spec(raw: object, where: Path, default_name: str) -> _Spec:
    """Check character.json's fields one by one so each mistake gets its own message."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must hold a JSON object")
    if raw.get("kind") != "drawn":
        raise ValueError(f'{where}: "kind" must be "drawn", got {raw.get("kind")!r}')
    name = raw.get("name", default_name)
    if not isinstance(name, str):
        raise ValueError(f'{where}: "name" must be a string')
    face = raw.get("face")
    if not isinstance(face, str):
        raise ValueError(f'{where}: "face" must name the face image, e.g. "face.png"')
    anchor = raw.get("mouth_anchor")
    if not (isinstance(anchor, list) and len(anchor) == 2 and all(map(_is_number, anchor))):
        raise ValueError(f'{where}: "mouth_anchor" must be [x, y] in face pixels, '
                         f"got {anchor!r}")
    scale = raw.get("mouth_scale", 1.0)
    if not (_is_number(scale) and scale > 0):
        raise ValueError(f'{where}: "mouth_scale" must be a positive number, got {scale!r}')
    mouths = raw.get("mouths")
    if not isinstance(mouths, dict) or not all(isinstance(f, str) for f in mouths.values()):
        raise ValueError(f'{where}: "mouths" must map viseme names to image files')
    for viseme in mouths:
        if viseme not in VISEMES:
            raise ValueError(f'{where}: unknown viseme "{viseme}" in "mouths"; expected '
                             f"some of {', '.join(VISEME_NAMES)}")
    if "rest" not in mouths:
        raise ValueError(f'{where}: "mouths" has no "rest"; it is the one required viseme '
                         "(the others fall back to the nearest supplied shape)")
    blink = raw.get("blink")
    if blink is not None and not isinstance(blink, str):
        raise ValueError(f'{where}: "blink" must name an image file')
    background = raw.get("background")
    if background is not None and not (
        isinstance(background, list) and len(background) == 3
        and all(isinstance(v, int) and 0 <= v <= 255 for v in background)
    ):
        raise ValueError(f'{where}: "background" must be [B, G, R] in 0..255, '
                         f"got {background!r}")
    return _Spec(
        name=name, face=face, anchor=(float(anchor[0]), float(anchor[1])), scale=float(scale),
        mouths=dict(mouths), blink=blink,
        background=(background[0], background[1], background[2]) if background else None,
    )


def load_drawn_character(folder: Path) -> DrawnCharacter:
    """Load a drawn character folder (format in the module docstring).

    Raises ValueError saying what to fix for a missing or broken ``character.json``, a
    missing image, no ``rest`` mouth, mouths of different sizes or a misplaced anchor.
    """
    folder = Path(folder)
    spec_path = folder / "character.json"
    if not spec_path.is_file():
        raise ValueError(f"{folder} has no character.json; a drawn character folder needs one "
                         "(see docs/avatars.md)")
    try:
        raw = json.loads(spec_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{spec_path} is not valid JSON: {e}") from e
    spec = _parse_spec(raw, spec_path, folder.name)

    face_raw = _read_image(folder / spec.face, "face image")
    face = np.ascontiguousarray(face_raw[..., :3])
    face_alpha = None
    if face_raw.shape[2] == 4:
        face_alpha = face_raw[..., 3].astype(np.float32) / 255.0
        flat = np.array(spec.background or (255, 255, 255), np.float32)
        mixed = face * face_alpha[..., None] + flat * (1.0 - face_alpha[..., None])
        face = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)

    mouths: dict[str, np.ndarray] = {}
    first: tuple[str, tuple[int, ...]] | None = None
    for viseme, file in spec.mouths.items():
        path = folder / file
        what = f"mouth {viseme!r}"
        mouth = _premultiplied(_read_image(path, what), what, path)
        if first is None:
            first = (file, mouth.shape[:2])
        elif mouth.shape[:2] != first[1]:
            raise ValueError(f"{path} is {mouth.shape[1]}x{mouth.shape[0]} but {first[0]} is "
                             f"{first[1][1]}x{first[1][0]}; all mouth images must be one size")
        if spec.scale != 1.0:
            h, w = mouth.shape[:2]
            size = (max(1, round(w * spec.scale)), max(1, round(h * spec.scale)))
            # Resizing premultiplied colour keeps dark fringes off the soft mouth edges.
            interp = cv2.INTER_AREA if spec.scale < 1 else cv2.INTER_LINEAR
            mouth = cv2.resize(mouth, size, interpolation=interp)
        mouths[viseme] = mouth

    blink = None
    if spec.blink is not None:
        path = folder / spec.blink
        blink = _premultiplied(_read_image(path, "blink image"), "blink image", path)
        if blink.shape[:2] != face.shape[:2]:
            raise ValueError(f"{path} is {blink.shape[1]}x{blink.shape[0]} but the face is "
                             f"{face.shape[1]}x{face.shape[0]}; blink must match the face")
    try:
        character = DrawnCharacter(
            name=spec.name, face=face, face_alpha=face_alpha, mouths=mouths,
            mouth_anchor=spec.anchor, blink=blink, background=spec.background,
        )
    except ValueError as e:
        raise ValueError(f"{folder}: {e}") from None
    missing = [v for v in VISEME_NAMES if v not in mouths]
    if missing:
        log.info("drawn character %r: %s fall back to %s", character.name, ", ".join(missing),
                 ", ".join(character.resolve(v) for v in missing))
    return character


# ---------------------------------------------------------------------------------- drawing

_SS = 2
"""Supersampling: shapes are drawn at twice the size and shrunk, for smooth edges."""
_SHIFT = 4
"""Fractional bits of OpenCV coordinates, so sub-pixel positions survive."""

Point = tuple[float, float]


def _fx(value: float) -> int:
    return round(value * _SS * (1 << _SHIFT))


def _arc(center: Point, axes: Point, start: float, end: float, n: int = 40) -> list[Point]:
    """Points along an ellipse, angles in degrees clockwise from +x like cv2.ellipse."""
    t = np.radians(np.linspace(start, end, n))
    xs, ys = center[0] + axes[0] * np.cos(t), center[1] + axes[1] * np.sin(t)
    return [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]


def _spline(points: Sequence[Point], steps: int = 12) -> list[Point]:
    """A Catmull-Rom curve through ``points`` (organic outlines from a few control points)."""
    p = np.asarray(points, np.float64)
    p = np.vstack([p[:1], p, p[-1:]])
    out: list[Point] = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        for t in np.linspace(0.0, 1.0, steps, endpoint=False):
            q = 0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t * t
                       + (3 * p1 - p0 - 3 * p2 + p3) * t ** 3)
            out.append((float(q[0]), float(q[1])))
    out.append((float(p[-2][0]), float(p[-2][1])))
    return out


class _Canvas:
    """A premultiplied BGRA drawing surface at ``_SS`` times its output size.

    Drawing an anti-aliased shape on a colour plane and an alpha plane that both start at 0 is
    exactly premultiplied "over" compositing, so the planes shrink and layer linearly.
    """

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.color: np.ndarray = np.zeros((height * _SS, width * _SS, 3), np.uint8)
        self.alpha: np.ndarray = np.zeros((height * _SS, width * _SS), np.uint8)

    def _planes(self, color: Color) -> tuple[tuple[np.ndarray, Color], ...]:
        return (self.color, color), (self.alpha, (255, 255, 255))

    def ellipse(self, center: Point, axes: Point, color: Color, thickness: float = -1,
                start: float = 0, end: float = 360) -> None:
        """A filled ellipse, or an outline / arc when ``thickness`` > 0 (output pixels)."""
        c, a = (_fx(center[0]), _fx(center[1])), (_fx(axes[0]), _fx(axes[1]))
        t = -1 if thickness < 0 else max(1, round(thickness * _SS))
        for plane, value in self._planes(color):
            cv2.ellipse(plane, c, a, 0, start, end, value, t, cv2.LINE_AA, _SHIFT)

    def poly(self, points: Sequence[Point], color: Color, thickness: float = -1,
             closed: bool = True) -> None:
        """A filled polygon, or a polyline when ``thickness`` > 0."""
        pts = np.round(np.asarray(points, np.float64) * (_SS << _SHIFT)).astype(np.int32)
        for plane, value in self._planes(color):
            if thickness < 0:
                cv2.fillPoly(plane, [pts], value, cv2.LINE_AA, _SHIFT)
            else:
                t = max(1, round(thickness * _SS))
                cv2.polylines(plane, [pts], closed, value, t, cv2.LINE_AA, _SHIFT)

    def blur(self, sigma: float) -> None:
        self.color = cv2.GaussianBlur(self.color, (0, 0), sigma * _SS)
        self.alpha = cv2.GaussianBlur(self.alpha, (0, 0), sigma * _SS)

    def paste(self, layer: _Canvas, mask: _Canvas | None = None, opacity: float = 1.0) -> None:
        """Lay ``layer`` over this canvas, clipped to ``mask``'s shape when given."""
        k = np.full(self.alpha.shape, opacity, np.float32)
        if mask is not None:
            k *= mask.alpha.astype(np.float32) / 255.0
        cover = layer.alpha.astype(np.float32) / 255.0 * k
        color = layer.color * k[..., None] + self.color * (1.0 - cover[..., None])
        alpha = layer.alpha * k + self.alpha * (1.0 - cover)
        self.color = np.clip(color + 0.5, 0, 255).astype(np.uint8)
        self.alpha = np.clip(alpha + 0.5, 0, 255).astype(np.uint8)

    def finish(self) -> np.ndarray:
        """Straight (not premultiplied) uint8 BGRA at the output size, ready for PNG."""
        size = (self.width, self.height)
        color = cv2.resize(self.color.astype(np.float32), size, interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(self.alpha.astype(np.float32), size, interpolation=cv2.INTER_AREA)
        straight = color * 255.0 / np.maximum(alpha, 1e-3)[..., None]
        return np.clip(np.dstack([straight, alpha]) + 0.5, 0, 255).astype(np.uint8)


# Palette (B, G, R).
_BACKGROUND: Color = (238, 226, 208)
_SKIN: Color = (176, 208, 250)
_SKIN_SHADE: Color = (146, 178, 228)
_OUTLINE: Color = (50, 62, 92)
_HAIR: Color = (38, 58, 98)
_HAIR_LIGHT: Color = (62, 90, 140)
_IRIS: Color = (160, 112, 60)
_DARK: Color = (30, 25, 25)
_WHITE: Color = (255, 255, 255)
_BLUSH: Color = (150, 140, 245)
_SHIRT: Color = (150, 122, 58)
_LIP: Color = (118, 110, 214)
_LIP_LINE: Color = (60, 50, 130)
_MOUTH: Color = (45, 30, 95)
_TONGUE: Color = (130, 120, 240)
_TEETH: Color = (246, 250, 252)

_FACE_SIZE = 512
_EYES = (196.0, 316.0)
_EYE_Y = 258.0
_MOUTH_ANCHOR = (256, 352)
_MOUTH_SIZE = (160, 112)
_MC: Point = (80.0, 56.0)
"""Centre of the mouth canvas; lands on the face's mouth anchor."""


def _draw_face() -> np.ndarray:
    cv = _Canvas(_FACE_SIZE, _FACE_SIZE)
    cv.poly([(218, 350), (294, 350), (300, 480), (212, 480)], _SKIN_SHADE)  # neck
    cv.ellipse((256, 600), (215, 150), _SHIRT)
    cv.ellipse((256, 600), (215, 150), _OUTLINE, 3, 180, 360)
    cv.poly(_spline([(214, 452), (236, 480), (256, 500), (276, 480), (298, 452)]), _SKIN_SHADE)
    cv.poly(_spline([(214, 452), (236, 480), (256, 500), (276, 480), (298, 452)]), _OUTLINE, 3,
            closed=False)
    cv.ellipse((256, 205), (162, 152), _HAIR)  # hair behind the head
    for side in (-1, 1):
        ear = (256 + side * 140, 266)
        cv.ellipse(ear, (24, 34), _SKIN)
        cv.ellipse(ear, (24, 34), _OUTLINE, 3)
        cv.ellipse((ear[0] + side * 3, ear[1]), (11, 18), _SKIN_SHADE, 4,
                   *((100, 260) if side > 0 else (-80, 80)))
    cv.ellipse((256, 250), (142, 162), _SKIN)
    cv.ellipse((256, 250), (142, 162), _OUTLINE, 3)
    hair = _arc((256, 215), (158, 150), 172, 368) + _spline(
        [(412, 246), (394, 196), (364, 152), (318, 132), (268, 146), (214, 174), (166, 186),
         (128, 222), (110, 262)])
    cv.poly(hair, _HAIR)
    cv.poly(hair, _OUTLINE, 3)
    for strand in ([(340, 92), (300, 104), (258, 130)], [(300, 80), (250, 98), (214, 140)]):
        cv.poly(_spline(strand), _HAIR_LIGHT, 4, closed=False)
    for cx in _EYES:
        cv.ellipse((cx, 206), (30, 12), _HAIR, 7, 200, 340)  # eyebrow
        cv.ellipse((cx, _EYE_Y), (27, 33), _WHITE)
        cv.ellipse((cx, _EYE_Y), (27, 33), _OUTLINE, 2.5)
        cv.ellipse((cx + 3, _EYE_Y + 5), (18, 20), _IRIS)
        cv.ellipse((cx + 3, _EYE_Y + 7), (10, 11), _DARK)
        cv.ellipse((cx - 4, _EYE_Y - 3), (6, 6), _WHITE)  # catch-lights make the eyes alive
        cv.ellipse((cx + 10, _EYE_Y + 15), (3, 3), _WHITE)
        cv.ellipse((cx, _EYE_Y), (27, 33), _OUTLINE, 5, 200, 340)  # upper lash line
    cv.ellipse((256, 300), (13, 9), _SKIN_SHADE, 4, 20, 160)  # nose
    blush = _Canvas(_FACE_SIZE, _FACE_SIZE)
    for cx in (170, 342):
        blush.ellipse((cx, 322), (30, 18), _BLUSH)
    blush.blur(6)
    cv.paste(blush, opacity=0.55)
    return cv.finish()


def _draw_blink() -> np.ndarray:
    cv = _Canvas(_FACE_SIZE, _FACE_SIZE)
    for cx in _EYES:
        cv.ellipse((cx, _EYE_Y), (31, 37), _SKIN)
        cv.ellipse((cx, _EYE_Y - 6), (27, 12), _OUTLINE, 5, 15, 165)  # closed lids, content
        cv.ellipse((cx, _EYE_Y - 14), (22, 10), _SKIN_SHADE, 2.5, 200, 340)  # lid crease
    return cv.finish()


def _open_mouth(cv: _Canvas, outer: Point, inner: Point, center: Point = _MC,
                upper_teeth: float = 0, lower_teeth: float = 0, tongue: float = 0) -> None:
    """Lips around a dark opening; teeth and tongue are clipped to the opening."""
    cv.ellipse(center, outer, _LIP)
    cv.ellipse(center, outer, _LIP_LINE, 2.5)
    inside, mask = _Canvas(cv.width, cv.height), _Canvas(cv.width, cv.height)
    mask.ellipse(center, inner, _MOUTH)
    inside.ellipse(center, inner, _MOUTH)
    x1, x2 = center[0] - inner[0] - 2, center[0] + inner[0] + 2
    top, bottom = center[1] - inner[1], center[1] + inner[1]
    if tongue:
        inside.ellipse((center[0], bottom), (inner[0] * 0.75, inner[1] * tongue * 2), _TONGUE)
    if upper_teeth:
        inside.poly([(x1, top - 2), (x2, top - 2), (x2, top + upper_teeth),
                     (x1, top + upper_teeth)], _TEETH)
    if lower_teeth:
        inside.poly([(x1, bottom + 2), (x2, bottom + 2), (x2, bottom - lower_teeth),
                     (x1, bottom - lower_teeth)], _TEETH)
    cv.paste(inside, mask)
    cv.ellipse(center, inner, _LIP_LINE, 2)


def _mouth_rest(cv: _Canvas) -> None:
    cv.ellipse((80, 42), (30, 14), _LIP_LINE, 4.5, 25, 155)


def _mouth_mbp(cv: _Canvas) -> None:
    cv.ellipse(_MC, (33, 6), _LIP)
    cv.poly([(46, 56), (114, 56)], _LIP_LINE, 4, closed=False)
    for cx, start in ((44, 110), (116, -70)):  # cheeks bunch at the corners when pressing
        cv.ellipse((cx, 56), (4, 7), _LIP_LINE, 2, start, start + 140)


def _mouth_aa(cv: _Canvas) -> None:
    _open_mouth(cv, (37, 40), (30, 33), (80, 58), upper_teeth=10, tongue=0.45)


def _mouth_ee(cv: _Canvas) -> None:
    _open_mouth(cv, (50, 22), (44, 15), upper_teeth=8, lower_teeth=6)


def _mouth_oo(cv: _Canvas) -> None:
    _open_mouth(cv, (26, 32), (15, 20), (80, 58), tongue=0.35)


def _mouth_uu(cv: _Canvas) -> None:
    _open_mouth(cv, (18, 17), (7, 6))
    for angle in (40, 140, 220, 320):  # pucker creases
        t = math.radians(angle)
        cv.poly([(80 + 10 * math.cos(t), 56 + 9.5 * math.sin(t)),
                 (80 + 15 * math.cos(t), 56 + 14 * math.sin(t))], _LIP_LINE, 1.5, closed=False)


def _mouth_fv(cv: _Canvas) -> None:
    cv.ellipse((80, 54), (32, 9), _MOUTH)
    cv.ellipse((80, 64), (34, 11), _LIP)
    cv.ellipse((80, 64), (34, 11), _LIP_LINE, 2.5, 0, 180)
    teeth = [(58, 46), (102, 46), *_arc((80, 56), (22, 6), 0, 180, 16)]
    cv.poly(teeth, _TEETH)
    cv.ellipse((80, 50), (36, 8), _LIP, -1, 180, 360)
    cv.ellipse((80, 50), (36, 8), _LIP_LINE, 2.5, 180, 360)


def _mouth_cons(cv: _Canvas) -> None:
    _open_mouth(cv, (38, 15), (32, 8), upper_teeth=5)


_MOUTH_DRAWERS: dict[str, Callable[[_Canvas], None]] = {
    "rest": _mouth_rest, "MBP": _mouth_mbp, "AA": _mouth_aa, "EE": _mouth_ee,
    "OO": _mouth_oo, "UU": _mouth_uu, "FV": _mouth_fv, "CONS": _mouth_cons,
}


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path}")
    path.write_bytes(data.tobytes())


def draw_default_character(out_dir: Path) -> None:
    """Draw the project's own cartoon character into ``out_dir`` (a drawn character folder).

    Writes face.png, blink.png, mouths/<viseme>.png for every viseme and character.json.
    The output is deterministic: the same OpenCV build gives the same bytes.
    """
    out_dir = Path(out_dir)
    (out_dir / "mouths").mkdir(parents=True, exist_ok=True)
    _write_png(out_dir / "face.png", _draw_face())
    _write_png(out_dir / "blink.png", _draw_blink())
    for viseme in VISEME_NAMES:
        cv = _Canvas(*_MOUTH_SIZE)
        _MOUTH_DRAWERS[viseme](cv)
        _write_png(out_dir / "mouths" / f"{viseme}.png", cv.finish())
    spec = {
        "name": "Cartoon",
        "kind": "drawn",
        "face": "face.png",
        "mouth_anchor": list(_MOUTH_ANCHOR),
        "mouth_scale": 1.0,
        "mouths": {v: f"mouths/{v}.png" for v in VISEME_NAMES},
        "blink": "blink.png",
        "background": list(_BACKGROUND),
    }
    (out_dir / "character.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    log.info("drew the default character into %s", out_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m inference.avatar.drawn OUT_DIR``: redraw the default character."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("out_dir", type=Path, help="folder to write (created if needed)")
    args = parser.parse_args(argv)
    draw_default_character(args.out_dir)
    print(f"wrote the default drawn character to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
