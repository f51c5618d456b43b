"""Avatars known to the server: the shipped ones plus whatever the user drops in avatars/.

An avatar is a photo, a short video loop, or a drawn-character folder. Everything is
prepared once at start-up (face boxes, mouth geometry) and shared read-only by all requests.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inference.avatar.blink import blink_image
from inference.avatar.drawn import DrawnCharacter, load_drawn_character
from inference.avatar.prepare import IMAGE_SUFFIXES, VIDEO_SUFFIXES, prepare
from inference.frames import AvatarFrame, MouthGeometry

log = logging.getLogger(__name__)

BLINK_PERIOD = 4.0
"""Seconds between idle blinks of a still avatar."""
BLINK_FRAMES = (0.5, 1.0, 1.0, 0.5)
"""Eyelid closure of the frames of one blink (at 25 fps: 160 ms)."""


@dataclass(frozen=True)
class Avatar:
    """A prepared avatar, shared read-only by every request and session."""

    name: str
    kind: str
    """``photo`` (a still or a video loop) or ``drawn``."""
    frames: tuple[AvatarFrame, ...]
    teeth: bool = True
    """Render teeth in the mouth opening (photos of people); off for toothless characters."""
    character: DrawnCharacter | None = None
    """The drawn character's parts when kind is ``drawn``."""
    _blinks: dict[float, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    """Blink pictures by eyelid closure, drawn once: the same array every time, so callers'
    identity-keyed caches (the live pipeline's I420 conversions) hit instead of filling up."""

    @property
    def still_photo(self) -> bool:
        """A photo of one frame: not a video loop (which moves on its own), not a drawn
        character. Such an avatar blinks from its landmarks and sways at rest
        (inference/avatar/sway.py)."""
        return self.kind == "photo" and len(self.frames) == 1

    def frame_at(self, index: int) -> AvatarFrame:
        """Frame ``index`` of the loop, played forwards then backwards so the loop never jumps."""
        n = len(self.frames)
        if n == 1:
            return self.frames[0]
        period = 2 * n - 2
        k = index % period
        return self.frames[k if k < n else period - k]

    def idle_image(self, index: int) -> np.ndarray:
        """The picture shown at frame ``index`` while nobody speaks: the loop's frame, or a
        blink every few seconds (a drawn character's lids, or a still photo's eyelids from
        its landmarks; a video loop moves on its own)."""
        frame = self.frame_at(index)
        period = int(BLINK_PERIOD * 25)
        k = index % period
        closure = BLINK_FRAMES[k] if k < len(BLINK_FRAMES) else 0.0
        drawn = self.character is not None and self.character.blink is not None
        still = self.still_photo and frame.landmarks is not None
        if not closure or not (drawn or still):
            return frame.image
        image = self._blinks.get(closure)
        if image is None:
            if self.character is not None:
                image = self.character.render_frame({"rest": 1.0}, blink=closure)
            else:
                image = blink_image(frame, closure)
            image.setflags(write=False)  # shared by every session
            image = self._blinks.setdefault(closure, image)
        return image

    def describe(self) -> dict[str, object]:
        """Public summary for /api/avatars."""
        h, w = self.frames[0].image.shape[:2]
        return {
            "name": self.name,
            "kind": self.kind,
            "frames": len(self.frames),
            "width": w,
            "height": h,
            "teeth": self.teeth,
        }


def drawn_avatar(name: str, character: DrawnCharacter) -> Avatar:
    """Wrap a drawn character as an avatar whose 'face box' is the mouth box."""
    box = character.mouth_box()
    cx, cy = character.mouth_anchor
    mouth = MouthGeometry(
        center_x=float(cx),
        center_y=float(cy),
        half_width=box.width / 2,
        lip_height=box.height / 3,
        chin_y=float(box.y2),
    )
    image = character.render_frame({"rest": 1.0})
    image.setflags(write=False)
    frame = AvatarFrame(image=image, box=box, mouth=mouth, teeth=False, character=character)
    return Avatar(name=name, kind="drawn", frames=(frame,), teeth=False, character=character)


def _options(path: Path) -> dict[str, object]:
    """Optional sidecar ``NAME.json`` next to a photo/video, e.g. {"teeth": false}."""
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        data = json.loads(sidecar.read_text())
    except ValueError as e:
        raise ValueError(f"{sidecar}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f'{sidecar}: expected a JSON object such as {{"teeth": false}}')
    return data


def load_avatar(path: Path, cache_dir: Path, progress: bool = False) -> Avatar:
    """Prepare one avatar from a photo, a video or a drawn-character folder."""
    if path.is_dir():
        return drawn_avatar(path.name, load_drawn_character(path))
    media = prepare(path, cache_dir, progress)
    teeth = bool(_options(path).get("teeth", True))
    return Avatar(name=path.stem, kind="photo", frames=media.avatar_frames(teeth), teeth=teeth)


UPLOADED = "uploaded"
"""Subfolder of the avatars folder holding avatars added over HTTP."""


class AvatarStore:
    """All avatars by name. Broken user files are logged and skipped, never fatal."""

    def __init__(
        self, avatars: dict[str, Avatar], default: str, uploaded: set[str] | None = None
    ) -> None:
        if not avatars:
            raise ValueError("no avatars could be loaded; check the avatars folder")
        self._avatars = avatars
        self.default = default if default in avatars else sorted(avatars)[0]
        self.uploaded = set(uploaded or ())
        """Avatars added over HTTP (``UPLOADED``): the ones that may be deleted."""

    @classmethod
    def load(
        cls, folder: Path, cache_dir: Path, default: str, uploads_dir: Path | None = None
    ) -> AvatarStore:
        """Prepare every avatar in ``folder`` and in the uploads folder (default: its
        ``uploaded`` subfolder)."""
        found = cls._load_folder(folder, cache_dir)
        uploads = cls._load_folder(uploads_dir or folder / UPLOADED, cache_dir)
        uploads = {n: a for n, a in uploads.items() if n not in found}  # shipped names win
        return cls(found | uploads, default, set(uploads))

    @staticmethod
    def _load_folder(folder: Path, cache_dir: Path) -> dict[str, Avatar]:
        found: dict[str, Avatar] = {}
        if not folder.is_dir():
            return found
        for path in sorted(folder.iterdir()):
            is_media = path.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
            is_character = path.is_dir() and (path / "character.json").is_file()
            if not (is_media or is_character):
                continue
            try:
                avatar = load_avatar(path, cache_dir)
            except (ValueError, OSError) as e:
                log.error("avatar %s skipped: %s", path, e)
                continue
            found[avatar.name] = avatar
            log.info("avatar %s: %s, %d frame(s)", avatar.name, avatar.kind, len(avatar.frames))
        return found

    def add(self, avatar: Avatar) -> None:
        """An uploaded avatar, usable at once by new requests and live switches."""
        self._avatars[avatar.name] = avatar
        self.uploaded.add(avatar.name)

    def remove(self, name: str) -> Avatar:
        """Forget an uploaded avatar (sessions showing it keep it until they switch)."""
        if name not in self.uploaded:
            raise PermissionError(f"avatar {name!r} ships with the server and cannot be deleted")
        self.uploaded.discard(name)
        return self._avatars.pop(name)

    def names(self) -> list[str]:
        """Every avatar name, sorted."""
        return sorted(self._avatars)

    def get(self, name: str | None) -> Avatar:
        """The avatar called ``name`` (the default for None); ValueError lists the known ones."""
        key = self.default if name is None else name
        try:
            return self._avatars[key]
        except KeyError:
            raise ValueError(
                f"unknown avatar {name!r}; available: {', '.join(self.names())}"
            ) from None

    def describe(self) -> list[dict[str, object]]:
        """Summaries for /api/avatars."""
        return [self._avatars[n].describe() | {"default": n == self.default} for n in self.names()]
