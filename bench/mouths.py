"""Pictures of the weight-free engine's mouths, for a person to judge (docs/screenshots/).

    python bench/mouths.py

Writes, for the shipped photo and the shipped cartoon, a strip of mouth crops (rest, а, о,
и, м) to docs/screenshots/mouths-photo.png and mouths-cartoon.png, and a short clip of each
speaking "Мама мыла раму, а папа читал книгу." to docs/clips/. docs/screenshots/
mouths-photo-before.png is the strip the engine drew before face landmarks (kept, not
rewritten: the old renderer is gone).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # allow `python bench/mouths.py` from anywhere
    sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from inference.avatar.store import Avatar, AvatarStore  # noqa: E402
from inference.engines.base import create_engine  # noqa: E402
from inference.frames import AvatarFrame, Box, LipSyncRequest  # noqa: E402
from inference.lipsync import infer_and_composite  # noqa: E402
from inference.render import render_to_mp4  # noqa: E402
from inference.tts import create_tts  # noqa: E402

SHOTS = ROOT / "docs" / "screenshots"
CLIPS = ROOT / "docs" / "clips"
PHONEMES = ("_", "a", "o", "i", "m")
"""rest, а, о, и, м: espeak mnemonics the engine maps to its visemes."""
TEXT = "Мама мыла раму, а папа читал книгу."


def crop_around(frame: AvatarFrame, image: np.ndarray) -> np.ndarray:
    """The mouth and jaw, with some face around them."""
    m, h, w = frame.mouth, image.shape[0], image.shape[1]
    half = int(2.1 * m.half_width)
    box = Box(
        max(0, int(m.center_x) - half),
        max(0, int(m.center_y) - int(1.4 * half)),
        min(w, int(m.center_x) + half),
        min(h, int(m.center_y) + int(1.4 * half)),
    )
    return image[box.y1 : box.y2, box.x1 : box.x2]


def strip(avatar: Avatar) -> np.ndarray:
    """One crop per phoneme, side by side."""
    engine = create_engine("viseme")
    frame = avatar.frames[0]
    mel = np.zeros((80, 16), np.float32)
    tiles = []
    for phoneme in PHONEMES:
        request = LipSyncRequest(
            mel=mel, frame=frame, silent=phoneme == "_", phoneme=phoneme, stream=None
        )
        (image,) = infer_and_composite(engine, [request], True)
        tiles.append(crop_around(frame, image))
    return np.concatenate(tiles, axis=1)


def main() -> None:
    store = AvatarStore.load(ROOT / "avatars", Path(tempfile.mkdtemp()), "astronaut")
    speech = create_tts().synthesize(TEXT, "ru")
    SHOTS.mkdir(parents=True, exist_ok=True)
    CLIPS.mkdir(parents=True, exist_ok=True)
    for name, kind in (("astronaut", "photo"), ("cartoon", "cartoon")):
        avatar = store.get(name)
        cv2.imwrite(str(SHOTS / f"mouths-{kind}.png"), strip(avatar))
        out = CLIPS / f"viseme-{kind}.mp4"
        render_to_mp4(speech.pcm, avatar, create_engine("viseme"), out, phonemes=speech.phonemes)
        sys.stdout.write(f"{kind}: {SHOTS / f'mouths-{kind}.png'}, {out}\n")


if __name__ == "__main__":
    main()
