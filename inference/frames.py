"""Typed records that travel between pipeline stages.

Conventions (house style): images are ``uint8`` BGR ``(H, W, 3)`` arrays unless a field says
otherwise; audio is ``float32`` mono at 16 kHz in ``[-1, 1]``; times are seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

SAMPLE_RATE = 16_000
"""The pipeline's audio rate: everything is resampled to this on the way in."""
FPS = 25
"""Video frame rate; with SAMPLE_RATE it fixes 640 samples of audio per video frame."""
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS
MEL_STEP = 16
"""Mel frames per lip-sync window (200 ms at 80 mel frames per second)."""


class Box(NamedTuple):
    """Axis-aligned pixel box, half-open: rows y1..y2-1, columns x1..x2-1."""

    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1


@dataclass(frozen=True)
class MouthGeometry:
    """Where the mouth is in a full avatar frame (pixel coordinates, floats)."""

    center_x: float
    center_y: float
    half_width: float
    """Half the distance between the mouth corners."""
    lip_height: float
    """Height of both lips together when the mouth is closed."""
    chin_y: float
    """Lowest row of the chin; the jaw warp fades out below it."""


class FaceLandmarksLike(Protocol):
    """What an engine needs of a frame's landmarks (inference/avatar/landmarks.py's
    FaceLandmarks is one)."""

    def group(self, indices: tuple[int, ...]) -> np.ndarray:
        """The (x, y) points of one group of mesh indices, in order."""
        ...


class MouthPictures(Protocol):
    """What an engine needs of a drawn character (inference/avatar/drawn.py's
    DrawnCharacter is one): the base records name no concrete avatar type."""

    def render_mouth(self, weights: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """The mouth patch for viseme ``weights``: uint8 BGR image and float32 alpha."""
        ...

    def mouth_box(self) -> Box:
        """Where the patch goes on the face."""
        ...


@dataclass(frozen=True, eq=False)
class AvatarFrame:
    """One prepared frame of an avatar: the picture, its face box and mouth.

    Compared and hashed by identity (frames are prepared once and shared), so engines can
    cache per-frame work keyed by the frame itself.
    """

    image: np.ndarray
    """Full frame, uint8 BGR (H, W, 3). Never modified in place."""
    box: Box
    """Face box after pads and smoothing, clipped to the image."""
    mouth: MouthGeometry
    teeth: bool = True
    """Whether a rendered mouth opening may show teeth (off for toothless characters)."""
    character: MouthPictures | None = None
    """Set on frames of a drawn avatar: mouths are its pictures, ``box`` is the mouth box."""
    landmarks: FaceLandmarksLike | None = None
    """Lips, jaw line and eyes of a photo's face (inference/avatar/landmarks.py), when the
    face mesh found them; None for drawn avatars and where Haar's guesses stand."""


@dataclass(frozen=True)
class PhonemeMark:
    """One phoneme reported by the TTS, on the utterance's own timeline."""

    phoneme: str
    """The TTS's own mnemonic (espeak: ``'e``, ``a#``, ``m`` ...); stress marks included."""
    start: float
    end: float


@dataclass(frozen=True)
class WordMark:
    """One word reported by the TTS, on the utterance's own timeline."""

    text_position: int
    """Index of the word's first character in the input text (0-based)."""
    length: int
    start: float


@dataclass
class StreamState:
    """Per-stream memory an engine may keep between consecutive frames (e.g. smoothing).

    One instance per utterance or live stream; frames of one stream reach the engine in order,
    so state carried here keeps batched and unbatched results identical.
    """

    values: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class LipSyncRequest:
    """One video frame's worth of work for an engine."""

    mel: np.ndarray
    """float32 (80, 16) mel window in [-4, 4] starting at this frame's time; from a live
    stream, the columns after the engine's ``lookahead_frames`` may still be silence."""
    frame: AvatarFrame
    silent: bool
    """True when the 200 ms of audio ending with the engine's look-ahead (the window's own
    200 ms for Wav2Lip; ``lipsync.window_rms``) are below the silence threshold."""
    phoneme: str | None = None
    """Phoneme the TTS says is spoken at this frame, when timings are known."""
    stream: StreamState | None = None


@dataclass(frozen=True)
class FacePatch:
    """An engine's answer for one frame: pixels to paste over ``box`` of the avatar frame."""

    image: np.ndarray
    """uint8 BGR (box.height, box.width, 3)."""
    box: Box
    alpha: np.ndarray | None = None
    """Optional float32 (box.height, box.width) in [0, 1]; None lets the compositor choose."""
