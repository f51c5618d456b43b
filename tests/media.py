"""Media the tests make for themselves (tones, encoded files, videos) and ways to inspect MP4s.

Nothing binary is committed: every file is generated into a tmp folder with PyAV.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.audio.stream import AudioStream

from inference.audio_io import decode_audio
from inference.frames import SAMPLE_RATE, SAMPLES_PER_FRAME, Box, MouthGeometry


def tone(
    freq: float, seconds: float, rate: int = SAMPLE_RATE, amplitude: float = 0.5
) -> np.ndarray:
    """A float32 sine at ``freq`` Hz."""
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2.0 * np.pi * freq * t)).astype(np.float32)


def encoder_available(codec: str) -> bool:
    """Whether this PyAV build can encode with ``codec``."""
    try:
        av.codec.Codec(codec, "w")
    except (av.FFmpegError, ValueError):
        return False
    return True


def encode_audio(
    path: Path,
    pcm: np.ndarray,
    rate: int,
    codec: str,
    container_format: str | None = None,
    channels: int = 1,
) -> Path:
    """Write float mono ``pcm`` at ``rate`` into ``path`` with ``codec`` (PyAV converts the
    sample format and frame size the codec needs). ``channels=2`` duplicates the signal."""
    return encode_channels(path, channels, codec, container_format, "s16", rate, pcm=pcm)


CHANNEL_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1", 16: "hexadecagonal"}
"""A named FFmpeg layout per channel count the hostile-input tests use."""
SAMPLE_FORMATS = {
    "s16": (np.int16, 32767.0),
    "s32": (np.int32, 2.0**31 - 1),
    "flt": (np.float32, 1.0),
    "dbl": (np.float64, 1.0),
}
"""Packed sample formats: numpy dtype and full scale."""
PLANAR_CODECS = {
    "s16": ("pcm_s16le_planar", "nut"),
    "s32": ("pcm_s32le_planar", "nut"),
    "flt": ("aac", "mp4"),
}
"""An encoder (and container) whose decoder gives planar frames of each format (AAC
decodes to fltp). No common codec decodes to planar doubles: that case is tested on
frames (tests/test_audio_io.py)."""
PACKED_CODECS = {"s16": "pcm_s16le", "s32": "pcm_s32le", "flt": "pcm_f32le", "dbl": "pcm_f64le"}
"""WAV codecs whose decoder gives packed frames of each format."""


def encode_channels(
    path: Path,
    channels: int,
    codec: str,
    container_format: str | None,
    sample_format: str = "s16",
    rate: int = 8000,
    seconds: float = 0.5,
    pcm: np.ndarray | None = None,
) -> Path:
    """A file of ``channels`` equal channels of ``pcm`` (default: a 440 Hz tone at half
    scale), fed to the encoder as packed ``sample_format`` frames; PyAV converts them in C
    to what the codec takes (planar too), so no many-plane frame is ever made in Python."""
    layout = CHANNEL_LAYOUTS[channels]
    dtype, scale = SAMPLE_FORMATS[sample_format]
    signal = tone(440.0, seconds, rate) if pcm is None else pcm
    values = signal.astype(np.float64) * scale
    samples = (
        values.astype(dtype)
        if dtype in (np.float32, np.float64)
        else np.clip(np.round(values), -scale - 1, scale).astype(dtype)
    )
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, AudioStream)
        for start in range(0, samples.size, 1024):
            block = np.repeat(samples[start : start + 1024], channels).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(block, format=sample_format, layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def encode_video(path: Path, frames: list[np.ndarray], fps: int = 25) -> Path:
    """Write uint8 BGR frames as an H.264 MP4 without audio."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast"}
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@dataclass(frozen=True)
class DecodedMp4:
    """What a player sees in an MP4 file."""

    video_codec: str
    audio_codec: str
    fps: Fraction
    pix_fmt: str
    frames: list[np.ndarray]
    """uint8 BGR, one per video frame."""
    video_pts: list[int]
    video_duration: float
    """Seconds from the first frame's start to the last frame's end."""
    audio_duration: float
    """Seconds of audio the container declares (end of the last packet): what players play,
    after the encoder's priming and padding have been cut by the edit list."""
    audio: np.ndarray
    """Decoded float32 mono 16 kHz, including the AAC frame padding at the end."""


def decode_mp4(path: Path) -> DecodedMp4:
    """Decode every frame and the audio of an MP4 written by the renderer."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames: list[np.ndarray] = []
        pts: list[int] = []
        for frame in container.decode(video=0):
            assert frame.pts is not None
            frames.append(frame.to_ndarray(format="bgr24"))
            pts.append(frame.pts)
        video_codec, pix_fmt = video.codec_context.name, video.codec_context.pix_fmt
        fps = video.average_rate
        v_base = video.time_base
    with av.open(str(path)) as container:
        audio_stream = container.streams.audio[0]
        audio_codec, a_base = audio_stream.codec_context.name, audio_stream.time_base
        end = 0
        for packet in container.demux(audio=0):
            if packet.pts is not None and packet.duration is not None:
                end = max(end, packet.pts + packet.duration)
    assert fps is not None and v_base is not None and a_base is not None
    frame_ticks = round(1 / (fps * v_base))
    video_duration = float((max(pts) - min(pts) + frame_ticks) * v_base)
    return DecodedMp4(
        video_codec=video_codec,
        audio_codec=audio_codec,
        fps=Fraction(fps),
        pix_fmt=str(pix_fmt),
        frames=frames,
        video_pts=pts,
        video_duration=video_duration,
        audio_duration=float(end * a_base),
        audio=decode_audio(path),
    )


def frame_rms(pcm: np.ndarray, frames: int) -> np.ndarray:
    """RMS of each video frame's 40 ms of audio (zero-padded to ``frames`` frames)."""
    need = frames * SAMPLES_PER_FRAME
    padded = np.zeros(need, np.float64)
    usable = min(need, pcm.size)
    padded[:usable] = pcm[:usable]
    return np.sqrt(np.mean(padded.reshape(frames, SAMPLES_PER_FRAME) ** 2, axis=1))


def mouth_region(mouth: MouthGeometry, shape: tuple[int, ...]) -> Box:
    """A measuring window around a photo's mouth: both lips, the corners and the chin."""
    h, w = shape[:2]
    return Box(
        max(0, int(mouth.center_x - 1.5 * mouth.half_width)),
        max(0, int(mouth.center_y - 2.0 * mouth.lip_height)),
        min(w, int(np.ceil(mouth.center_x + 1.5 * mouth.half_width))),
        min(h, int(np.ceil(mouth.chin_y))),
    )


def region_change(frames: list[np.ndarray], reference: np.ndarray, box: Box) -> np.ndarray:
    """Mean absolute difference (0..255) of each frame from ``reference`` inside ``box``."""
    ref = reference[box.y1 : box.y2, box.x1 : box.x2].astype(np.float32)
    return np.array(
        [
            float(np.abs(f[box.y1 : box.y2, box.x1 : box.x2].astype(np.float32) - ref).mean())
            for f in frames
        ]
    )


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equally long series."""
    return float(np.corrcoef(np.asarray(a, np.float64), np.asarray(b, np.float64))[0, 1])
