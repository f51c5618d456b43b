"""The project's own cartoon character, drawn with OpenCV primitives.

``python -m inference.avatar.cartoon OUT_DIR`` redraws it (the shipped copy lives in
``avatars/cartoon``); the folder it writes is a drawn-character folder as described in
:mod:`inference.avatar.drawn`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from inference.visemes import VISEME_NAMES

log = logging.getLogger(__name__)

Color = tuple[int, int, int]

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
            q = 0.5 * (
                2 * p1
                + (p2 - p0) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t * t
                + (3 * p1 - p0 - 3 * p2 + p3) * t**3
            )
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

    def ellipse(
        self,
        center: Point,
        axes: Point,
        color: Color,
        thickness: float = -1,
        start: float = 0,
        end: float = 360,
    ) -> None:
        """A filled ellipse, or an outline / arc when ``thickness`` > 0 (output pixels)."""
        c, a = (_fx(center[0]), _fx(center[1])), (_fx(axes[0]), _fx(axes[1]))
        t = -1 if thickness < 0 else max(1, round(thickness * _SS))
        for plane, value in self._planes(color):
            cv2.ellipse(plane, c, a, 0, start, end, value, t, cv2.LINE_AA, _SHIFT)

    def poly(
        self, points: Sequence[Point], color: Color, thickness: float = -1, closed: bool = True
    ) -> None:
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
    cv.poly(
        _spline([(214, 452), (236, 480), (256, 500), (276, 480), (298, 452)]),
        _OUTLINE,
        3,
        closed=False,
    )
    cv.ellipse((256, 205), (162, 152), _HAIR)  # hair behind the head
    for side in (-1, 1):
        ear = (256 + side * 140, 266)
        cv.ellipse(ear, (24, 34), _SKIN)
        cv.ellipse(ear, (24, 34), _OUTLINE, 3)
        cv.ellipse(
            (ear[0] + side * 3, ear[1]),
            (11, 18),
            _SKIN_SHADE,
            4,
            *((100, 260) if side > 0 else (-80, 80)),
        )
    cv.ellipse((256, 250), (142, 162), _SKIN)
    cv.ellipse((256, 250), (142, 162), _OUTLINE, 3)
    hair = _arc((256, 215), (158, 150), 172, 368) + _spline(
        [
            (412, 246),
            (394, 196),
            (364, 152),
            (318, 132),
            (268, 146),
            (214, 174),
            (166, 186),
            (128, 222),
            (110, 262),
        ]
    )
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


def _open_mouth(
    cv: _Canvas,
    outer: Point,
    inner: Point,
    center: Point = _MC,
    upper_teeth: float = 0,
    lower_teeth: float = 0,
    tongue: float = 0,
) -> None:
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
        inside.poly(
            [(x1, top - 2), (x2, top - 2), (x2, top + upper_teeth), (x1, top + upper_teeth)], _TEETH
        )
    if lower_teeth:
        inside.poly(
            [
                (x1, bottom + 2),
                (x2, bottom + 2),
                (x2, bottom - lower_teeth),
                (x1, bottom - lower_teeth),
            ],
            _TEETH,
        )
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
        cv.poly(
            [
                (80 + 10 * math.cos(t), 56 + 9.5 * math.sin(t)),
                (80 + 15 * math.cos(t), 56 + 14 * math.sin(t)),
            ],
            _LIP_LINE,
            1.5,
            closed=False,
        )


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
    "rest": _mouth_rest,
    "MBP": _mouth_mbp,
    "AA": _mouth_aa,
    "EE": _mouth_ee,
    "OO": _mouth_oo,
    "UU": _mouth_uu,
    "FV": _mouth_fv,
    "CONS": _mouth_cons,
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
