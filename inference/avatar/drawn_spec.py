"""``character.json`` of a drawn character, checked field by field so that each mistake gets
its own message (the format is in inference/avatar/drawn.py's docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inference.visemes import VISEME_NAMES, VISEMES

Color = tuple[int, int, int]
"""A BGR colour, 0..255 each."""


@dataclass(frozen=True)
class CharacterSpec:
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


def parse_spec(raw: object, where: Path, default_name: str) -> CharacterSpec:
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
        raise ValueError(f'{where}: "mouth_anchor" must be [x, y] in face pixels, got {anchor!r}')
    scale = raw.get("mouth_scale", 1.0)
    if not (_is_number(scale) and scale > 0):
        raise ValueError(f'{where}: "mouth_scale" must be a positive number, got {scale!r}')
    mouths = _parse_mouths(raw.get("mouths"), where)
    blink = raw.get("blink")
    if blink is not None and not isinstance(blink, str):
        raise ValueError(f'{where}: "blink" must name an image file')
    return CharacterSpec(
        name=name,
        face=face,
        anchor=(float(anchor[0]), float(anchor[1])),
        scale=float(scale),
        mouths=mouths,
        blink=blink,
        background=_parse_background(raw.get("background"), where),
    )


def _parse_mouths(mouths: object, where: Path) -> dict[str, str]:
    if not isinstance(mouths, dict) or not all(isinstance(f, str) for f in mouths.values()):
        raise ValueError(f'{where}: "mouths" must map viseme names to image files')
    for viseme in mouths:
        if viseme not in VISEMES:
            raise ValueError(
                f'{where}: unknown viseme "{viseme}" in "mouths"; expected '
                f"some of {', '.join(VISEME_NAMES)}"
            )
    if "rest" not in mouths:
        raise ValueError(
            f'{where}: "mouths" has no "rest"; it is the one required viseme '
            "(the others fall back to the nearest supplied shape)"
        )
    return dict(mouths)


def _parse_background(background: object, where: Path) -> Color | None:
    if background is None:
        return None
    if not (
        isinstance(background, list)
        and len(background) == 3
        and all(isinstance(v, int) and 0 <= v <= 255 for v in background)
    ):
        raise ValueError(f'{where}: "background" must be [B, G, R] in 0..255, got {background!r}')
    return (background[0], background[1], background[2])
