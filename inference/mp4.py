"""MP4 writing with PyAV: H.264 (yuv420p) + AAC, playable in every browser."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import cv2
import numpy as np

from inference.audio_io import pcm_to_s16
from inference.frames import FPS, SAMPLE_RATE

log = logging.getLogger(__name__)

AAC_FRAME = 1024
"""Samples per AAC frame; audio is fed in these units."""


def bgr_to_video_frame(bgr: np.ndarray) -> av.VideoFrame:
    """uint8 BGR -> yuv420p VideoFrame (BT.601, limited range, like FFmpeg's default).

    OpenCV's converter is about 3x faster than PyAV's bgr24 frame + swscale on this CPU.
    """
    return i420_to_video_frame(
        np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), dtype=np.uint8)
    )


def i420_to_video_frame(yuv: np.ndarray) -> av.VideoFrame:
    """uint8 (h * 3/2, w) I420 array (OpenCV's layout) -> yuv420p VideoFrame.

    Copies plane by plane into a frame PyAV allocated: the same result as
    ``VideoFrame.from_ndarray(yuv, format="yuv420p")`` at about a tenth of its cost here
    (0.03 against 0.3-0.7 ms for 512x512), which matters at 25 frames a second per session.
    """
    height, width = yuv.shape[0] * 2 // 3, yuv.shape[1]
    if yuv.ndim != 2 or height % 2 or width % 2 or yuv.shape[0] != height * 3 // 2:
        raise ValueError(f"expected an even-sized I420 array, got shape {yuv.shape}")
    # U and V follow Y as (h/2 * w/2)-byte blocks, which need not be whole rows of width w.
    flat = np.ascontiguousarray(yuv).reshape(-1)
    luma, chroma = height * width, height * width // 4
    planes = (
        flat[:luma].reshape(height, width),
        flat[luma : luma + chroma].reshape(height // 2, width // 2),
        flat[luma + chroma :].reshape(height // 2, width // 2),
    )
    frame = av.VideoFrame(width, height, "yuv420p")
    for target, data in zip(video_frame_planes(frame), planes, strict=True):
        target[...] = data
    return frame


def video_frame_planes(frame: av.VideoFrame) -> tuple[np.ndarray, ...]:
    """Writable uint8 views (no copy) of a yuv420p frame's Y (h, w), U and V (h/2, w/2)."""
    views = []
    for plane in frame.planes:
        # Rows of the frame may be padded past the picture's width (line_size).
        rows = np.frombuffer(memoryview(plane), np.uint8, count=plane.line_size * plane.height)
        views.append(rows.reshape(plane.height, plane.line_size)[:, : plane.width])
    return tuple(views)


def s16_audio_frame(samples: np.ndarray, pts: int, rate: int = SAMPLE_RATE) -> av.AudioFrame:
    """A mono s16 AudioFrame of ``samples`` at ``rate``, starting at sample ``pts``."""
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = Fraction(1, rate)
    return frame


def clone_video_frame(frame: av.VideoFrame) -> av.VideoFrame:
    """A copy of ``frame`` (pixels, pts, time base) that can be handed to an encoder.

    Encoders change the frame they are given (pts rescaled to their time base, picture type
    set), and a released frame is shared: the session's own encoder, each viewer's and the
    recorder read the same object from different threads. Each encoder gets its own copy;
    copying 512x512 costs about 0.03 ms.
    """
    copy = av.VideoFrame(frame.width, frame.height, frame.format.name)
    for source, target in zip(frame.planes, copy.planes, strict=True):
        if (source.line_size, source.buffer_size) != (target.line_size, target.buffer_size):
            copy = av.VideoFrame.from_ndarray(frame.to_ndarray(), format=frame.format.name)
            break  # another alignment: PyAV's own (slower) copy
        np.frombuffer(memoryview(target), np.uint8)[:] = np.frombuffer(memoryview(source), np.uint8)
    copy.pts = frame.pts
    copy.time_base = frame.time_base
    return copy


FRAGMENTED = "+frag_keyframe+empty_moov+default_base_moof"
"""movflags of a fragmented MP4 (moof/mdat every keyframe): a crash loses one fragment."""


class _AacTrack:
    """Audio encoded to AAC into one container (both writers' audio): 16 kHz mono by
    default, or a source's own rate and channels."""

    def __init__(
        self, container: av.container.OutputContainer, rate: int = SAMPLE_RATE, channels: int = 1
    ) -> None:
        self._container = container
        self.rate, self.channels = rate, channels
        layout = "mono" if channels == 1 else "stereo"
        self._stream = container.add_stream("aac", rate=rate, layout=layout)
        self._stream.bit_rate = 64_000 * channels if rate <= SAMPLE_RATE else 96_000 * channels
        self._samples = 0
        self._pending = np.zeros((0, channels), np.int16)

    def write(self, pcm: np.ndarray) -> None:
        """Append float32 samples at the track's rate: shape (n,) or (n, channels)."""
        s16 = pcm_to_s16(pcm.reshape(len(pcm), -1))
        if s16.shape[1] != self.channels:
            s16 = np.repeat(s16[:, :1], self.channels, axis=1)
        self._pending = np.concatenate((self._pending, s16))
        while len(self._pending) >= AAC_FRAME:
            self._encode(self._pending[:AAC_FRAME])
            self._pending = self._pending[AAC_FRAME:]

    def _encode(self, samples: np.ndarray) -> None:
        if self.channels == 1:
            frame = s16_audio_frame(samples.reshape(-1), self._samples, self.rate)
        else:  # packed s16 stereo: one plane of interleaved samples
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples).reshape(1, -1), format="s16", layout="stereo"
            )
            frame.sample_rate = self.rate
            frame.pts = self._samples
            frame.time_base = Fraction(1, self.rate)
        self._samples += len(samples)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def flush(self) -> None:
        """Encode what is pending and drain the encoder."""
        if self._pending.size:
            self._encode(self._pending)
            self._pending = np.zeros((0, self.channels), np.int16)
        for packet in self._stream.encode(None):
            self._container.mux(packet)


class _Mp4File:
    """What both writers share: the container, its AAC track, closing it once."""

    def __init__(self, path: Path, movflags: str, audio: tuple[int, int]) -> None:
        self._container = av.open(str(path), mode="w", format="mp4", options={"movflags": movflags})
        self._audio_format = audio  # (rate, channels): the track is added after the video
        self._closed = False

    def _add_audio(self) -> None:
        self._audio = _AacTrack(self._container, *self._audio_format)

    def write_audio(self, pcm: np.ndarray) -> None:
        """Append float32 samples at the audio track's rate ((n,) or (n, channels))."""
        self._audio.write(pcm)

    def _flush_video(self) -> None:
        """Drain the video encoder, where there is one."""

    def close(self) -> None:
        """Flush the encoders and finish the file. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._audio.flush()
            self._flush_video()
        finally:
            self._container.close()

    def __enter__(self) -> _Mp4File:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Mp4Writer(_Mp4File):
    """Write BGR frames and 16 kHz mono audio into an MP4 file.

    ``fragmented=True`` writes a fragmented MP4 (moof/mdat every keyframe), so a crash loses
    at most the fragment being written; otherwise the index is moved to the front
    (``faststart``) so browsers can start playback before the download ends.
    """

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        fps: int = FPS,
        fragmented: bool = False,
        crf: int = 23,
        preset: str = "superfast",
        audio: tuple[int, int] = (SAMPLE_RATE, 1),
    ) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"H.264 needs even frame sizes, got {width}x{height}")
        super().__init__(path, FRAGMENTED if fragmented else "+faststart", audio)
        self._video = self._container.add_stream("libx264", rate=fps)
        self._video.width = width
        self._video.height = height
        self._video.pix_fmt = "yuv420p"
        self._video.options = {"preset": preset, "crf": str(crf), "g": str(fps * 2)}
        self._add_audio()
        self._frames = 0

    def write_video(self, bgr: np.ndarray) -> None:
        """Append one frame (uint8 BGR); this is the pipeline's one colour conversion."""
        self._write_frame(bgr_to_video_frame(bgr))

    def write_i420(self, yuv: np.ndarray) -> None:
        """Append one frame already in I420 (``(height * 3 // 2, width)`` uint8 planes, as
        ``VideoFrame.to_ndarray(format="yuv420p")`` gives): no colour conversion at all."""
        self._write_frame(i420_to_video_frame(yuv))

    def _write_frame(self, frame: av.VideoFrame) -> None:
        frame.pts = self._frames
        self._frames += 1
        for packet in self._video.encode(frame):
            self._container.mux(packet)

    def _flush_video(self) -> None:
        for packet in self._video.encode(None):
            self._container.mux(packet)

    def __enter__(self) -> Mp4Writer:
        return self


class PacketMp4Writer(_Mp4File):
    """Fragmented MP4 from video packets encoded elsewhere (a live stream's H.264, Annex B
    with parameter sets in every keyframe) and 16 kHz mono audio encoded to AAC here.

    No video encoder runs here: the packets are muxed as they are, the parameter sets taken
    from the first one (PyAV's extract_extradata), which must therefore be a keyframe. Frame
    ``index`` is in 1/25 s; a gap in the indices is a picture held on screen, not a shift.
    """

    def __init__(self, path: Path, width: int, height: int, fps: int = FPS) -> None:
        super().__init__(path, FRAGMENTED, (SAMPLE_RATE, 1))
        self._video = self._container.add_mux_stream("h264", rate=fps, width=width, height=height)
        self._video.time_base = Fraction(1, fps)
        self._add_audio()
        self._fps = fps
        self._started = False

    def write_packet(self, data: bytes, index: int, keyframe: bool) -> None:
        """Mux one encoded frame at frame ``index`` (the first written must be a keyframe)."""
        if not self._started and not keyframe:
            raise ValueError("a recording starts at a keyframe")
        self._started = True
        packet = av.Packet(data)
        packet.pts = packet.dts = index
        packet.time_base = Fraction(1, self._fps)
        packet.is_keyframe = keyframe
        packet.stream = self._video
        self._container.mux(packet)
