"""Checking an uploaded avatar in a child process, and rewriting it as a file of our own.

    python -m inference.avatar.upload_check SOURCE OUT_DIR MAX_SECONDS

An upload is a stranger's image or video, and OpenCV's and FFmpeg's decoders are C code: as
with audio uploads (inference/isolated_decode.py), it is decoded in a child, so a decoder
bug fails one upload, not the server. The child also refuses image bombs before they are
decoded (OpenCV's own pixel limit, set low), checks that there is exactly one face large
enough to lip-sync, and writes what it decoded again as a PNG or an H.264 MP4 made by us:
the server itself only ever decodes those.

Protocol on stdout, one line each: ``P 0.40`` progress, then ``OK {json}`` (the file written,
frames, the face box of the first frame) or ``ER message``.
"""

from __future__ import annotations

import json
import os
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

MAX_PIXELS = 40_000_000
"""Largest image accepted, in pixels (a 50,000 x 50,000 "bomb" is refused before decoding)."""
MIN_FACE = 64
"""Narrowest face accepted, in pixels (smaller, the mouth is a few pixels: Wav2Lip upscales
its 96 x 96 crops, the viseme engine draws it blurred)."""
OTHER_FACE = 0.35
"""A second face at least this fraction of the largest one's area makes the picture ambiguous."""
VIDEO_SUFFIXES = {".mp4", ".webm", ".mov"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> int:
    # Before cv2 is imported: OpenCV reads its decoding limit from the environment.
    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(MAX_PIXELS)
    source, out_dir, max_seconds = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    try:
        result = check(source, out_dir, max_seconds)
    except ValueError as e:
        say(f"ER {e}")
        return 0
    except Exception as e:  # a decoder's own error type on a stranger's bytes
        say(f"ER the file could not be read ({type(e).__name__})")
        return 0
    say("OK " + json.dumps(result))
    return 0


def check(source: Path, out_dir: Path, max_seconds: float) -> dict[str, object]:
    """Decode, check the face, write our own copy; ValueError saying what is wrong."""
    suffix = source.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        frames = [read_image(source)]
    elif suffix in VIDEO_SUFFIXES:
        frames = read_video(source, max_seconds)
    else:
        known = ", ".join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))
        raise ValueError(f"unsupported file type {suffix or 'none'!r}; send one of {known}")
    say("P 0.50")
    box = one_face(frames[0])
    say("P 0.70")
    written = write_own(frames, out_dir, video=len(frames) > 1)
    say("P 0.90")
    height, width = frames[0].shape[:2]
    return {"file": written.name, "frames": len(frames), "box": box, "size": [width, height]}


def read_image(path: Path) -> np.ndarray:
    import cv2
    import numpy as np

    from inference.avatar.prepare import _limit_size

    data = path.read_bytes()
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # OpenCV asserts its pixel limit on the declared size, before decoding
        image = None
    if image is None:
        raise ValueError(
            f"the image does not decode, or it is larger than {MAX_PIXELS // 1_000_000} megapixels"
        )
    return _limit_size(image)


def read_video(path: Path, max_seconds: float) -> list[np.ndarray]:
    import av

    from inference.avatar.prepare import _limit_size

    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("the video has no video stream")
            stream = container.streams.video[0]
            if (stream.width or 0) * (stream.height or 0) > MAX_PIXELS:
                raise ValueError(f"the video is larger than {MAX_PIXELS // 1_000_000} megapixels")
            limit = int(max_seconds * 25)
            for frame in container.decode(stream):
                frames.append(_limit_size(frame.to_ndarray(format="bgr24")))
                if len(frames) % 25 == 0:
                    say(f"P {0.1 + 0.4 * min(1.0, len(frames) / max(1, limit)):.2f}")
                if len(frames) > limit:
                    raise ValueError(
                        f"the video is longer than {max_seconds:g} s; send a shorter loop"
                    )
    except av.FFmpegError as e:
        raise ValueError(f"the video does not decode ({type(e).__name__})") from None
    if not frames:
        raise ValueError("the video holds no frames")
    return frames


def one_face(image: np.ndarray) -> list[int]:
    import cv2

    root = Path(cv2.data.haarcascades)  # type: ignore[attr-defined]
    cascade = cv2.CascadeClassifier(str(root / "haarcascade_frontalface_default.xml"))
    gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    side = min(gray.shape)
    found = cascade.detectMultiScale(gray, 1.1, 5, minSize=(max(24, side // 12),) * 2)
    if len(found) == 0:
        raise ValueError("no face found; upload a frontal photo or video of one face")
    faces = sorted((tuple(int(v) for v in f) for f in found), key=lambda f: -f[2] * f[3])
    x, y, w, h = faces[0]
    others = [f for f in faces[1:] if f[2] * f[3] >= OTHER_FACE * w * h]
    if others:
        raise ValueError(f"{len(others) + 1} faces found; upload a picture of one face")
    if w < MIN_FACE:
        raise ValueError(f"the face is too small ({w} px wide; at least {MIN_FACE})")
    return [x, y, w, h]


def write_own(frames: list[np.ndarray], out_dir: Path, video: bool) -> Path:
    import av
    import cv2

    if not video:
        path = out_dir / "avatar.png"
        if not cv2.imwrite(str(path), frames[0]):
            raise ValueError("the avatar could not be written")
        return path
    path = out_dir / "avatar.mp4"
    first = frames[0]
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height = first.shape[1], first.shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "18"}
        for k, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = k, Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


if __name__ == "__main__":
    sys.exit(main())
