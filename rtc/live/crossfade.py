"""A face switched while the avatar speaks dissolves into the new one instead of cutting.

The frames already made with the old face play out; the next few made with the new face are
blended with the old face's own picture of the same slot (its idle picture: the old face is
not lip-synced any more), from mostly old to all new. Faces of different sizes cut (the
stream re-opens its encoder then anyway).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import av
import cv2
import numpy as np

from inference.avatar.store import Avatar
from inference.mp4 import bgr_to_video_frame

FADE_FRAMES = 8
"""Slots a mid-speech switch dissolves over (320 ms at 25 fps)."""

Finish = Callable[[np.ndarray], av.VideoFrame]
Request = TypeVar("Request")


@dataclass(frozen=True)
class CrossFade:
    """The dissolve from ``old`` over the slots ``first`` .. ``first + frames - 1``."""

    old: Avatar
    first: int
    frames: int = FADE_FRAMES

    @classmethod
    def between(cls, old: Avatar, new: Avatar, first: int) -> CrossFade | None:
        """The fade for a switch at slot ``first``; None when the faces' sizes differ."""
        if old.frames[0].image.shape != new.frames[0].image.shape:
            return None
        return cls(old, first)

    def covers(self, index: int) -> bool:
        """Whether slot ``index`` is inside the dissolve."""
        return self.first <= index < self.first + self.frames

    def done(self, index: int) -> bool:
        """Whether slot ``index`` is past the dissolve."""
        return index >= self.first + self.frames

    def weight(self, index: int) -> float:
        """The new face's share at slot ``index`` (0 < w < 1 inside the dissolve)."""
        return (index - self.first + 1) / (self.frames + 1)

    def finish(self, index: int) -> Finish:
        """The batcher's finishing step for slot ``index``: blend, then convert (in the
        batcher's thread, like the plain conversion it replaces)."""
        return partial(_blend, self.old.idle_image(index), self.weight(index))


def _blend(old: np.ndarray, weight: float, new: np.ndarray) -> av.VideoFrame:
    mixed = cv2.addWeighted(new, weight, old, 1.0 - weight, 0.0)
    return bgr_to_video_frame(np.asarray(mixed, dtype=np.uint8))


def finishing_parts(
    fade: CrossFade | None, batch: list[tuple[int, Request]]
) -> list[tuple[list[tuple[int, Request]], Finish]]:
    """``batch``'s (slot, request) pairs as the submissions to the batcher, each with its
    finishing step: the plain slots together (a plain conversion), and the slots inside
    ``fade`` one by one (each its own blend; the batcher still infers them together)."""
    plain = [(i, r) for i, r in batch if fade is None or not fade.covers(i)]
    parts: list[tuple[list[tuple[int, Request]], Finish]] = (
        [(plain, bgr_to_video_frame)] if plain else []
    )
    if fade is not None:
        parts += [([(i, r)], fade.finish(i)) for i, r in batch if fade.covers(i)]
    return parts
