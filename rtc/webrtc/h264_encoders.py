"""Which H.264 encoder a stream's shared encoder opens: x264 on the CPU, or NVENC.

x264 (``ultrafast``/``zerolatency``) is the default: every machine has it, and on ours it is
what the benchmarks measured. NVENC (``h264_nvenc``, shipped in PyAV's wheel) moves the encode
onto the video engine of an NVIDIA card that has one, off the CPU cores (by how much is not
measured here: no such card); the H100 and H200 have no NVENC, consumer and workstation cards
do. ``auto`` opens NVENC where it works and x264 elsewhere. Whether NVENC opens is learned
once per process by encoding one small frame (1.6 ms on our CPU machine, where it fails: no
driver, no video engine).
"""

from __future__ import annotations

import functools
from fractions import Fraction

import av
import numpy as np

X264 = "libx264"
NVENC = "h264_nvenc"
CHOICES = (X264, NVENC, "auto")
"""Values of ``--h264-encoder``."""


def open_h264(name: str, bitrate: int) -> av.VideoCodecContext:
    """An unopened H.264 context of encoder ``name`` (x264 or NVENC) with the stream's
    settings: constrained baseline, no B-frames, no look-ahead, the rate as its ceiling,
    so every browser decodes it and each frame leaves as soon as it went in."""
    codec = av.CodecContext.create(name, "w")
    assert isinstance(codec, av.VideoCodecContext)
    rate = {"maxrate": str(bitrate), "bufsize": str(bitrate)}
    if name == X264:
        codec.profile = "Baseline"
        codec.options = {"preset": "ultrafast", "tune": "zerolatency", "level": "31", **rate}
    elif name == NVENC:
        # p1 is NVENC's fastest preset, ull its ultra-low-latency tuning; forced-idr makes a
        # requested keyframe an IDR (what a joining browser can start from), as x264's is.
        codec.options = {
            "preset": "p1",
            "tune": "ull",
            "profile": "baseline",
            "zerolatency": "1",
            "delay": "0",
            "bf": "0",
            "rc": "cbr",
            "forced-idr": "1",
            **rate,
        }
    else:
        raise ValueError(f"unknown H.264 encoder {name!r}; expected one of {CHOICES}")
    return codec


@functools.cache
def nvenc_problem() -> str | None:
    """None when NVENC encodes here, else why not (FFmpeg's words)."""
    try:
        codec = open_h264(NVENC, 500_000)
        codec.width, codec.height, codec.pix_fmt = 256, 256, "yuv420p"
        codec.time_base, codec.framerate = Fraction(1, 25), Fraction(25, 1)
        blank = av.VideoFrame.from_ndarray(np.full((384, 256), 128, np.uint8), format="yuv420p")
        codec.encode(blank)
    except av.FFmpegError as e:
        return e.strerror or str(e)  # strerror alone: str() repeats every option
    return None


def resolve_h264_encoder(requested: str) -> str:
    """The encoder to open for ``--h264-encoder requested``: ``auto`` becomes NVENC where it
    works, else x264; ``h264_nvenc`` where it does not is a ValueError saying why."""
    if requested == X264:
        return X264
    if requested not in CHOICES:
        raise ValueError(f"unknown H.264 encoder {requested!r}; expected one of {CHOICES}")
    problem = nvenc_problem()
    if requested == NVENC and problem is not None:
        raise ValueError(
            f"--h264-encoder {NVENC} cannot encode on this machine ({problem}); it needs an "
            f"NVIDIA card with a video engine and its driver; use {X264} or auto"
        )
    return NVENC if problem is None else X264
