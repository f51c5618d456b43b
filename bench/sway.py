"""What a still photo's head sway costs a live session, per frame, on the shipped photo.

    python bench/sway.py              # 10 s of idle and of viseme speech frames, 5 rounds
    python bench/sway.py --rounds 3

Measures, in CPU milliseconds per 25 fps frame (the best of the rounds: on a shared machine
the others only add other processes' interference):

* the sway as the live pipeline applies it (rtc/live/motion.py): idle frames (the photo and
  its blinks) and speech frames of the viseme engine, and, for comparison, a warp of every
  whole frame;
* what the moving picture adds to the stream's encoder (the session's own H.264 and VP8
  settings, rtc/webrtc/encoding.py), and to its bitrate, against the same frames unmoved.

OpenCV runs single-threaded here, so the figures are CPU time whatever the machine's load.
Prints a markdown table; docs/avatars.md quotes it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # allow `python bench/sway.py` from anywhere
    sys.path.insert(0, str(ROOT))

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from bench.report import cpu_model  # noqa: E402
from inference.avatar.store import Avatar, AvatarStore  # noqa: E402
from inference.engines.base import create_engine  # noqa: E402
from inference.lipsync import build_requests, run_engine  # noqa: E402
from inference.mel import frame_count, melspectrogram  # noqa: E402
from inference.mp4 import bgr_to_video_frame, video_frame_planes  # noqa: E402
from inference.tts import create_tts  # noqa: E402
from rtc.live.motion import FrameMotion  # noqa: E402
from rtc.webrtc.encoding import H264, VP8, VideoEncoder  # noqa: E402

FRAMES = 250
"""Frames per round: 10 s at 25 fps."""
TEXT = "Раз, два, три, четыре, пять. Папа купил большую карту мира. Мама мыла раму."


def speech_frames(avatar: Avatar) -> list[av.VideoFrame]:
    """FRAMES viseme frames of espeak speech (the speech repeated to fill them)."""
    speech = create_tts().synthesize(TEXT, "ru")
    pcm = np.asarray(speech.pcm)
    count = min(FRAMES, frame_count(pcm.size))
    requests = build_requests(pcm, melspectrogram(pcm), avatar, range(count), 0.004)
    images = run_engine(create_engine("viseme"), requests, True)
    frames = [bgr_to_video_frame(image) for image in images]
    return [frames[i % len(frames)] for i in range(FRAMES)]


def idle_frames(avatar: Avatar) -> list[av.VideoFrame]:
    """FRAMES idle frames: the photo and its blinks."""
    return [bgr_to_video_frame(avatar.idle_image(i)) for i in range(FRAMES)]


def cpu_ms(run: Callable[[], object], rounds: int) -> float:
    """CPU milliseconds per frame of ``run`` (one round: FRAMES frames), best round."""
    per_round = []
    for _ in range(rounds):
        start = time.process_time()
        run()
        per_round.append((time.process_time() - start) * 1000 / FRAMES)
    return min(per_round)


def moved(avatar: Avatar, frames: list[av.VideoFrame], offset: int = 0) -> list[av.VideoFrame]:
    motion = FrameMotion(seed=7)
    return [motion.apply(avatar, offset + i, f) for i, f in enumerate(frames)]


def whole_warps(avatar: Avatar, frames: list[av.VideoFrame]) -> None:
    """The plain way, for comparison: every plane of every frame warped whole."""
    moving = FrameMotion(seed=7).moving(avatar)
    assert moving is not None
    for i, frame in enumerate(frames):
        luma, chroma = moving.motion.plane_matrices(i)
        for k, plane in enumerate(video_frame_planes(frame)):
            height, width = plane.shape
            cv2.warpAffine(plane, chroma if k else luma, (width, height), flags=cv2.INTER_LINEAR)


def encode(codec: str, frames: list[av.VideoFrame]) -> tuple[float, float]:
    """(CPU ms per frame, kbit/s) of the session's encoder over ``frames``."""
    encoder = VideoEncoder(codec, 1_000_000)
    size = 0
    start = time.process_time()
    for i, frame in enumerate(frames):
        frame.pts, frame.time_base = i, Fraction(1, 25)
        size += encoder.encode(frame, keyframe=i == 0).size
    cpu = (time.process_time() - start) * 1000 / len(frames)
    return cpu, size * 8 / (len(frames) / 25) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as cache:
        avatar = AvatarStore.load(ROOT / "avatars", Path(cache), "astronaut").get("astronaut")
    height, width = avatar.frames[0].image.shape[:2]
    sources = {"idle": idle_frames(avatar), "speech": speech_frames(avatar)}
    print(f"{width}x{height} photo, {FRAMES} frames a round; {cpu_model()}\n")
    print("| frames | sway (live path) | whole-frame warp | H.264 encode +, bitrate | "
          "VP8 encode +, bitrate |")  # fmt: skip
    print("|---|---|---|---|---|")
    for name, frames in sources.items():
        sway = cpu_ms(partial(moved, avatar, frames), args.rounds)
        whole = cpu_ms(partial(whole_warps, avatar, frames), args.rounds)
        cells = []
        for codec in (H264, VP8):
            still = [encode(codec, frames) for _ in range(args.rounds)]
            moving = [encode(codec, moved(avatar, frames)) for _ in range(args.rounds)]
            extra = min(m[0] for m in moving) - min(s[0] for s in still)
            rates = (
                statistics.median(s[1] for s in still),
                statistics.median(m[1] for m in moving),
            )
            cells.append(f"{extra:+.2f} ms, {rates[0]:.0f} -> {rates[1]:.0f} kbit/s")
        print(f"| {name} | {sway:.2f} ms | {whole:.2f} ms | {cells[0]} | {cells[1]} |")
    print("\nCPU ms per frame; 1 ms per frame at 25 fps is 2.5 % of a core.")


if __name__ == "__main__":
    main()
