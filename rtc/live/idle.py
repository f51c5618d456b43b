"""The pictures shown while nobody speaks: the avatar's loop and blinks, as I420 frames,
converted once per distinct picture (the engine is never called for them)."""

from __future__ import annotations

from collections import OrderedDict

import av
import numpy as np

from inference.avatar.store import Avatar
from inference.mp4 import bgr_to_video_frame, i420_to_video_frame

CACHED_PICTURES = 64
"""Distinct idle pictures kept converted (a video loop's frames, the blink closures)."""


class IdleSource:
    """Idle video frames of one avatar, with their BGR -> I420 conversion cached."""

    def __init__(self, avatar: Avatar) -> None:
        self.avatar = avatar
        self._yuv: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        """Conversions held (a test checks that blink frames hit the cache)."""
        return len(self._yuv)

    def frame(self, index: int) -> av.VideoFrame:
        """A new VideoFrame of the idle picture of slot ``index``."""
        image = self.avatar.idle_image(index)
        cached = self._yuv.get(id(image))
        if cached is None or cached[0] is not image:
            yuv = bgr_to_video_frame(image).to_ndarray()
            # Keyed by identity (the avatar hands out the same arrays), the image kept with
            # its conversion so that its id cannot be reused meanwhile.
            self._yuv[id(image)] = (image, yuv)
            if len(self._yuv) > CACHED_PICTURES:
                self._yuv.popitem(last=False)
        else:
            yuv = cached[1]
            self._yuv.move_to_end(id(image))
        return i420_to_video_frame(yuv)
