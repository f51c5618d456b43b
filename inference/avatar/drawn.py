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

``python -m inference.avatar.cartoon OUT_DIR`` redraws the project's own character (shipped in
``avatars/cartoon``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from inference.avatar.drawn_spec import Color, parse_spec
from inference.frames import Box
from inference.visemes import VISEME_NAMES, VISEMES

log = logging.getLogger(__name__)

SHIPPED_CHARACTER = Path(__file__).resolve().parents[2] / "avatars" / "cartoon"
"""Where the project's own character lives in the repository."""

_FEATHER = 3
"""Pixels over which the mouth patch's alpha ramps down at the box edges."""


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
            raise ValueError(
                f"face must be uint8 BGR (H, W, 3), got {self.face.dtype} {self.face.shape}"
            )
        if "rest" not in self.mouths:
            raise ValueError('no "rest" mouth; it is the one viseme every character needs')
        shapes = {m.shape for m in self.mouths.values()}
        if len(shapes) != 1 or next(iter(shapes))[2:] != (4,):
            raise ValueError(f"mouths must all be (h, w, 4) of one size, got {sorted(shapes)}")
        height, width = self.face.shape[:2]
        ax, ay = self.mouth_anchor
        if not (0 <= ax < width and 0 <= ay < height):
            raise ValueError(
                f"mouth_anchor ({ax:g}, {ay:g}) is outside the {width}x{height} "
                "face; give the pixel (x, y) at the centre of the mouth"
            )
        box = self.mouth_box()
        if box.x1 < 0 or box.y1 < 0 or box.x2 > width or box.y2 > height:
            raise ValueError(
                f"mouth box {tuple(box)} reaches outside the {width}x{height} face; "
                "move mouth_anchor inwards or lower mouth_scale"
            )
        resolved = {v: self.mouths[fallback_viseme(v, self.mouths)] for v in VISEME_NAMES}
        crop = self.face[box.y1 : box.y2, box.x1 : box.x2].astype(np.float32) / 255.0
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
                raise ValueError(
                    f"unknown viseme {name!r}; expected one of {', '.join(VISEME_NAMES)}"
                )
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
        under = image[box.y1 : box.y2, box.x1 : box.x2].astype(np.float32)
        mixed = patch * alpha[..., None] + under * (1.0 - alpha[..., None])
        image[box.y1 : box.y2, box.x1 : box.x2] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
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
        raise ValueError(
            f"{what} {path} has no alpha channel; save it as an RGBA PNG whose "
            "transparent pixels show the face below"
        )
    out = image.astype(np.float32) / 255.0
    out[..., :3] *= out[..., 3:]
    return out


def load_drawn_character(folder: Path) -> DrawnCharacter:
    """Load a drawn character folder (format in the module docstring).

    Raises ValueError saying what to fix for a missing or broken ``character.json``, a
    missing image, no ``rest`` mouth, mouths of different sizes or a misplaced anchor.
    """
    folder = Path(folder)
    spec_path = folder / "character.json"
    if not spec_path.is_file():
        raise ValueError(
            f"{folder} has no character.json; a drawn character folder needs one "
            "(see docs/avatars.md)"
        )
    try:
        raw = json.loads(spec_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{spec_path} is not valid JSON: {e}") from e
    spec = parse_spec(raw, spec_path, folder.name)

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
            raise ValueError(
                f"{path} is {mouth.shape[1]}x{mouth.shape[0]} but {first[0]} is "
                f"{first[1][1]}x{first[1][0]}; all mouth images must be one size"
            )
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
            raise ValueError(
                f"{path} is {blink.shape[1]}x{blink.shape[0]} but the face is "
                f"{face.shape[1]}x{face.shape[0]}; blink must match the face"
            )
    try:
        character = DrawnCharacter(
            name=spec.name,
            face=face,
            face_alpha=face_alpha,
            mouths=mouths,
            mouth_anchor=spec.anchor,
            blink=blink,
            background=spec.background,
        )
    except ValueError as e:
        raise ValueError(f"{folder}: {e}") from None
    missing = [v for v in VISEME_NAMES if v not in mouths]
    if missing:
        log.info(
            "drawn character %r: %s fall back to %s",
            character.name,
            ", ".join(missing),
            ", ".join(character.resolve(v) for v in missing),
        )
    return character
