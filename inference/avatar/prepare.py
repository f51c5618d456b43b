"""Prepare a photo or video avatar once: face boxes, mouth geometry and landmarks, cached.

A Haar cascade (shipped inside the opencv-python-headless<5 wheel) finds the face roughly;
MediaPipe's face mesh (inference/avatar/landmarks.py) then places lips, jaw line and eyes,
and the face box and mouth come from those points. Where the mesh is not installed or finds
nothing, Haar's guesses stand: its boxes stop around the lower lip line, higher than the S3FD
boxes Wav2Lip was trained with, so they are extended down to the chin. Either way the
reference pads (top, bottom, left, right) = (0, 10, 0, 0) are applied.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from tqdm import tqdm

from inference.avatar.landmarks import KEPT, FaceLandmarks, face_mesh
from inference.frames import AvatarFrame, Box, MouthGeometry

log = logging.getLogger(__name__)

PREP_VERSION = 2
"""Bump when the cached data's meaning changes; old cache entries are then ignored."""
PADS = (0, 10, 0, 0)
"""Pads (top, bottom, left, right) in pixels, as in the reference, so the chin is inside."""
SMOOTH_FRAMES = 5
"""Boxes are averaged over this many following frames (offline, so non-causal is fine)."""
MAX_SIDE = 1280
"""Frames larger than this are scaled down: bigger frames only cost encode time."""
MAX_VIDEO_FRAMES = 750
"""Longest avatar loop (30 s at 25 fps); longer videos are cut."""
CHIN_EXTEND = 0.12
"""Fraction of the Haar box height added below it to reach the chin."""

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif"}


class NoFaceError(ValueError):
    """No face was found; the message says what kind of picture works."""


@dataclass(frozen=True)
class PreparedMedia:
    """What preparation found for every frame of a photo or video."""

    frames: tuple[np.ndarray, ...]
    """uint8 BGR frames (a photo has one)."""
    boxes: np.ndarray
    """int32 (n, 4): x1, y1, x2, y2 per frame after extension, pads and smoothing."""
    mouths: np.ndarray
    """float32 (n, 5): centre x, centre y, half width, lip height, chin y per frame."""
    landmarks: tuple[FaceLandmarks | None, ...] = ()
    """Per frame (when the face mesh ran and found the face): lips, jaw line and eyes."""

    def avatar_frames(self, teeth: bool = True) -> tuple[AvatarFrame, ...]:
        """The prepared frames as pipeline records."""
        out = []
        marks = self.landmarks or (None,) * len(self.frames)
        for image, box, mouth, lm in zip(self.frames, self.boxes, self.mouths, marks, strict=True):
            image.setflags(write=False)
            out.append(
                AvatarFrame(
                    image=image,
                    box=Box(*(int(v) for v in box)),
                    mouth=MouthGeometry(*(float(v) for v in mouth)),
                    teeth=teeth,
                    landmarks=lm,
                )
            )
        return tuple(out)


def content_hash(path: Path) -> str:
    """sha256 of the file's bytes: the cache key, so an edited file is prepared again."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_frames(path: Path, progress: bool = False) -> list[np.ndarray]:
    """Read a photo or a video's frames as BGR uint8, scaled so no side exceeds MAX_SIDE."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{path} is not a readable image (jpg, png, webp, bmp)")
        return [_limit_size(image)]
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported avatar type {suffix!r}; use an image "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}) "
            f"or a video ({', '.join(sorted(VIDEO_SUFFIXES))})"
        )
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            stream = container.streams.video[0]
            total = min(stream.frames or MAX_VIDEO_FRAMES, MAX_VIDEO_FRAMES)
            bar = tqdm(total=total, desc=f"reading {path.name}", unit="frame", disable=not progress)
            for frame in container.decode(stream):
                frames.append(_limit_size(frame.to_ndarray(format="bgr24")))
                bar.update(1)
                if len(frames) >= MAX_VIDEO_FRAMES:
                    log.warning("%s: using the first %d frames only", path, MAX_VIDEO_FRAMES)
                    break
            bar.close()
    except av.FFmpegError as e:
        raise ValueError(f"{path} is not a readable video: {e}") from e
    if not frames:
        raise ValueError(f"{path} holds no video frames")
    return frames


def _limit_size(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    scale = MAX_SIDE / max(h, w)
    if scale < 1.0:
        image = cv2.resize(
            image, (int(w * scale) // 2 * 2, int(h * scale) // 2 * 2), interpolation=cv2.INTER_AREA
        )
    # Video encoders need even sizes.
    h, w = image.shape[:2]
    return np.ascontiguousarray(image[: h // 2 * 2, : w // 2 * 2])


class FaceFinder:
    """Haar-cascade face and mouth detection (both cascades ship with OpenCV's wheel)."""

    def __init__(self) -> None:
        # OpenCV 5 dropped the cascades (and the class): a ValueError, so the avatar store
        # skips photos with this message instead of the server failing to start.
        missing = ValueError(
            f"OpenCV {cv2.__version__} has no Haar cascades to find a face with; install "
            "opencv-python-headless<5 (pyproject.toml's pin), or prepare the avatar where it "
            "is installed (server.py prepare: the cache entry is then used)"
        )
        data = getattr(cv2, "data", None)
        if not hasattr(cv2, "CascadeClassifier") or data is None:
            raise missing
        root = Path(data.haarcascades)
        self._face = cv2.CascadeClassifier(str(root / "haarcascade_frontalface_default.xml"))
        self._smile = cv2.CascadeClassifier(str(root / "haarcascade_smile.xml"))
        if self._face.empty() or self._smile.empty():
            raise missing

    def face(self, image: np.ndarray) -> tuple[int, int, int, int] | None:
        """Largest frontal face as (x, y, w, h), or None."""
        gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
        side = min(gray.shape)
        found = self._face.detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(max(24, side // 12),) * 2
        )
        if len(found) == 0:
            return None
        x, y, w, h = max(found, key=lambda r: int(r[2]) * int(r[3]))
        return int(x), int(y), int(w), int(h)

    def mouth(self, image: np.ndarray, face: tuple[int, int, int, int]) -> np.ndarray:
        """Mouth geometry (cx, cy, half width, lip height, chin y) inside a face box.

        Uses the smile cascade in the lower half of the face when it fires; otherwise falls
        back to average face proportions for a Haar box.
        """
        x, y, w, h = face
        gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
        roi = gray[y + h // 2 : y + h + h // 6, x + w // 8 : x + w - w // 8]
        found = self._smile.detectMultiScale(
            roi, scaleFactor=1.1, minNeighbors=12, minSize=(max(8, w // 5), max(4, h // 12))
        )
        cx, cy, half, lip = x + w / 2.0, y + 0.80 * h, 0.19 * w, 0.10 * h
        if len(found):
            mx, my, mw, mh = max(found, key=lambda r: int(r[2]) * int(r[3]))
            cand_cx = x + w // 8 + mx + mw / 2.0
            cand_cy = y + h // 2 + my + mh / 2.0
            # Accept only a plausible mouth: centred under the nose, in the lower face.
            if abs(cand_cx - cx) < 0.15 * w and 0.62 * h < cand_cy - y < 0.98 * h:
                cx, cy, half, lip = cand_cx, cand_cy, mw / 2.0 * 0.9, mh * 0.6
        # The visible chin sits a little below the Haar box (less than the crop extension).
        chin = y + h * 1.05
        return np.array([cx, cy, half, lip, chin], np.float32)


def _padded_box(
    face: tuple[int, int, int, int], shape: tuple[int, ...], to_chin: bool = True
) -> np.ndarray:
    """The face box with the reference pads; a Haar box (``to_chin``) is extended to the
    chin first (a landmark box ends at the chin already)."""
    x, y, w, h = face
    top, bottom, left, right = PADS
    y2 = y + h + (round(CHIN_EXTEND * h) if to_chin else 0)
    return np.array(
        [
            max(0, x - left),
            max(0, y - top),
            min(shape[1], x + w + right),
            min(shape[0], y2 + bottom),
        ],
        np.float64,
    )


def _fill_missing(values: list[np.ndarray | None], what: str, path: Path) -> np.ndarray:
    known = [i for i, v in enumerate(values) if v is not None]
    if not known:
        raise NoFaceError(
            f"no face found in {path}; use a well-lit, frontal face that fills at least a "
            f"tenth of the picture"
        )
    if len(known) < len(values):
        log.info(
            "%s: %s missing in %d of %d frames, interpolated",
            path,
            what,
            len(values) - len(known),
            len(values),
        )
    stacked = np.stack([v for v in values if v is not None]).astype(np.float64)
    out = np.empty((len(values), stacked.shape[1]), np.float64)
    for column in range(stacked.shape[1]):
        out[:, column] = np.interp(np.arange(len(values)), known, stacked[:, column])
    return out


def _smooth(rows: np.ndarray) -> np.ndarray:
    out = np.empty_like(rows)
    for i in range(len(rows)):
        out[i] = rows[i : i + SMOOTH_FRAMES].mean(axis=0)
    return out


def detect(path: Path, progress: bool = False) -> PreparedMedia:
    """Run detection over every frame of ``path`` (no cache)."""
    frames = load_frames(path, progress)
    finder = FaceFinder()
    mesh = face_mesh()
    boxes: list[np.ndarray | None] = []
    mouths: list[np.ndarray | None] = []
    marks: list[FaceLandmarks | None] = []
    bar = tqdm(
        frames,
        desc=f"finding the face in {path.name}",
        unit="frame",
        disable=not progress or len(frames) == 1,
    )
    for image in bar:
        face = finder.face(image)
        found = None if face is None or mesh is None else mesh.find(image, face)
        marks.append(found)
        if found is not None:  # the mesh's points: better than Haar's guesses
            boxes.append(_padded_box(found.face_box(), image.shape, to_chin=False))
            mouths.append(found.mouth())
        else:
            boxes.append(None if face is None else _padded_box(face, image.shape))
            mouths.append(None if face is None else finder.mouth(image, face))
    if mesh is not None and face_count(boxes) > face_count(marks):
        log.warning(
            "%s: the face mesh missed the face in %d of %d frames; Haar's guesses used there",
            path,
            face_count(boxes) - face_count(marks),
            len(frames),
        )
    box_rows = np.rint(_smooth(_fill_missing(boxes, "face", path))).astype(np.int32)
    mouth_rows = _smooth(_fill_missing(mouths, "mouth", path)).astype(np.float32)
    return PreparedMedia(tuple(frames), box_rows, mouth_rows, tuple(marks))


def face_count(rows: list[np.ndarray | None] | list[FaceLandmarks | None]) -> int:
    """Frames with something found."""
    return sum(row is not None for row in rows)


def _landmarks_from(row: object) -> FaceLandmarks | None:
    """A cached frame's landmarks (None stays None); ValueError when malformed."""
    if row is None:
        return None
    points = np.asarray(row, np.float32)
    if points.shape != (len(KEPT), 2):
        raise ValueError(f"landmarks of shape {points.shape}, expected {(len(KEPT), 2)}")
    return FaceLandmarks(points)


def prepare(path: Path, cache_dir: Path, progress: bool = False) -> PreparedMedia:
    """Detection results for ``path``, from the cache when its content hash is known.

    A missing, stale or corrupt cache entry is rebuilt (and the corrupt one logged).
    """
    key = content_hash(path)
    entry = cache_dir / f"{key[:32]}.json"
    if entry.exists():
        try:
            meta = json.loads(entry.read_text())
            if meta.get("version") == PREP_VERSION and meta.get("sha256") == key:
                frames = load_frames(path, progress)
                boxes = np.asarray(meta["boxes"], np.int32).reshape(-1, 4)
                mouths = np.asarray(meta["mouths"], np.float32).reshape(-1, 5)
                marks = tuple(_landmarks_from(row) for row in meta["landmarks"])
                if len(boxes) == len(frames) == len(mouths) == len(marks):
                    return PreparedMedia(tuple(frames), boxes, mouths, marks)
            log.warning("avatar cache %s does not match %s; preparing again", entry, path)
        except (ValueError, KeyError, TypeError, OSError) as e:
            log.warning("avatar cache %s is corrupt (%s); preparing again", entry, e)
    media = detect(path, progress)
    meta = {
        "version": PREP_VERSION,
        "sha256": key,
        "source": path.name,
        "boxes": media.boxes.tolist(),
        "mouths": np.round(media.mouths, 2).tolist(),
        "landmarks": [
            None if lm is None else np.round(lm.points, 1).tolist() for lm in media.landmarks
        ],
    }
    tmp = entry.with_suffix(".tmp")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(meta))
        tmp.replace(entry)  # atomic: a crash never leaves half an entry
    except OSError as e:
        # A full disk or a read-only cache costs the next start its speed, not the avatar.
        log.warning(
            "avatar cache %s could not be written (%s); %s is prepared but will be "
            "detected again next time",
            entry,
            e,
            path.name,
        )
        with contextlib.suppress(OSError):  # half a temporary file must not stay behind
            tmp.unlink(missing_ok=True)
    return media
