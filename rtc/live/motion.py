"""A session's released frames sway with the head: idle and speech frames alike.

Applied where frames enter the video queue, so every picture a session releases (idle,
speech, a switch's dissolve) moves with the same motion and speech starts without a jump.
The motion is inference/avatar/sway.py, applied to I420 planes by inference/avatar/moving.py;
here to av.VideoFrames, with the session's seed.
"""

from __future__ import annotations

import zlib

import av

from inference.avatar.moving import MovingPhoto
from inference.avatar.store import Avatar
from inference.mp4 import video_frame_planes
from rtc.live.options import PipelineOptions


def session_seed(session_id: str, options: PipelineOptions) -> int:
    """The options' ``motion_seed``, or one derived from the session id (stable across
    processes, unlike ``hash``)."""
    if options.motion_seed is not None:
        return options.motion_seed
    return zlib.crc32(session_id.encode())


class FrameMotion:
    """Moves the frames of whichever avatar the session shows (off: frames pass as they are)."""

    def __init__(self, seed: int, enabled: bool = True) -> None:
        self.seed = seed
        self.enabled = enabled
        self._avatar: Avatar | None = None
        self._moving: MovingPhoto | None = None

    @classmethod
    def for_session(cls, session_id: str, options: PipelineOptions) -> FrameMotion:
        """The motion a pipeline's options ask for."""
        return cls(session_seed(session_id, options), options.idle_motion)

    def moving(self, avatar: Avatar) -> MovingPhoto | None:
        """``avatar``'s moving photo (made once per avatar shown), None if it keeps still."""
        if not self.enabled:
            return None
        if avatar is not self._avatar:
            self._avatar, self._moving = avatar, MovingPhoto.for_avatar(avatar, self.seed)
        return self._moving

    def apply(self, avatar: Avatar, index: int, frame: av.VideoFrame) -> av.VideoFrame:
        """Slot ``index``'s picture as released: a new frame, moved, when ``avatar`` moves;
        ``frame`` itself otherwise (or when its size is not the avatar's: a frame made
        before a switch to an avatar of another size)."""
        moving = self.moving(avatar)
        if moving is None or (frame.width, frame.height) != moving.motion.size:
            return frame
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        out = av.VideoFrame(frame.width, frame.height, "yuv420p")
        moving.warp(video_frame_planes(frame), video_frame_planes(out), index)
        return out
