"""The Wav2Lip engines: ``wav2lip-gan`` and ``wav2lip-nogan`` (same generator, two weights).

Per request: crop the avatar frame to its face box, resize to 96x96 (aspect ignored), stack
the crop with its lower half zeroed (the target) and the unmasked crop (the reference) into
6 channels /255, BGR kept (avatar frames are BGR, like the training data: no colour flip here);
the mel window becomes (1, 80, 16). The generator's (3, 96, 96) output is x255 -> uint8 ->
resized back to the box. Silent windows skip the model and return the original crop.

On a CUDA device the engine also finishes frames itself (:meth:`Wav2LipEngine.infer_i420`,
:mod:`inference.engines.wav2lip_torch_path`): paste and colour conversion run on the GPU and
only I420 planes come back. :meth:`~Wav2LipEngine.infer` (face patches) stays for every
other caller.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Self

import cv2
import numpy as np

from config import EngineConfig
from inference.engines.base import (
    EngineUnavailable,
    LipSyncEngine,
    PendingFrames,
    register_engine,
)
from inference.engines.wav2lip_backends import (
    Backend,
    choose_backend,
    create_backend,
    resolve_device,
)
from inference.engines.wav2lip_calibrate import ranges_path_for
from inference.engines.wav2lip_inputs import crop_face, face_input, mel_input, small_face
from inference.engines.wav2lip_loader import (
    CHECKPOINT_NAMES,
    Variant,
    find_checkpoint,
    load_wav2lip,
)
from inference.engines.wav2lip_model import FACE_SIZE, MEL_BANDS, MEL_STEPS
from inference.engines.wav2lip_torch_path import TorchFramePath
from inference.frames import AvatarFrame, Box, FacePatch, LipSyncRequest

__all__ = [
    "Wav2LipEngine",
    "Wav2LipGanEngine",
    "Wav2LipNoganEngine",
    "create_gan_engine",
    "create_nogan_engine",
    "load_wav2lip",
    "locate_checkpoint",
]

log = logging.getLogger(__name__)


def locate_checkpoint(variant: Variant, config: EngineConfig, explicit: Path | None = None) -> Path:
    """The checkpoint to load for ``variant``: ``explicit``, else the one named in ``config``,
    else the first usual file name found in ``config.checkpoints_dir``.

    Raises EngineUnavailable naming the accepted files and the folder searched.
    """
    named = explicit or (config.gan_checkpoint if variant == "gan" else config.nogan_checkpoint)
    if named is not None:
        if not Path(named).is_file():
            raise EngineUnavailable(f"Wav2Lip {variant.upper()} checkpoint {named} does not exist")
        return Path(named)
    found = find_checkpoint(config.checkpoints_dir, variant)
    if found is None:
        names = " or ".join(CHECKPOINT_NAMES[variant])
        raise EngineUnavailable(
            f"no Wav2Lip {variant.upper()} checkpoint: put {names} into "
            f"{config.checkpoints_dir} (or name the file explicitly); see docs/engines.md"
        )
    return found


class Wav2LipEngine(LipSyncEngine):
    """Wav2Lip 96x96 lip sync over any :class:`~inference.engines.wav2lip_backends.Backend`.

    Build it with :meth:`from_config` (loads the checkpoint, picks device and backend) or
    directly around a backend (tests, benchmarks). ``device_path``: finish frames on the
    backend's device (:meth:`infer_i420`); None turns it on for CUDA backends only, True
    forces it (on a CPU backend it runs on CPU tensors: how the tests check it).
    """

    name: ClassVar[str] = "wav2lip"
    variant: ClassVar[Variant] = "gan"
    cache_size: ClassVar[int] = 2048
    """Prepared face crops kept (27 KB each): a few avatars' whole loops."""

    def __init__(
        self,
        backend: Backend,
        *,
        checkpoint: Path | None = None,
        max_batch: int = 16,
        device_path: bool | None = None,
    ) -> None:
        self._backend = backend
        self.backend = backend.name
        self.device = backend.device
        self.checkpoint = checkpoint
        self.max_batch = max(1, max_batch)
        if device_path is None:
            device_path = backend.device.startswith("cuda")
        self._frame_path = (
            TorchFramePath(backend, backend.device, self.max_batch) if device_path else None
        )
        self.finishes_frames = device_path
        # (id(image), box) -> (image, resized crop CHW uint8). The image is kept so its id
        # cannot be reused by another array while the entry lives.
        self._faces: OrderedDict[tuple[int, Box], tuple[np.ndarray, np.ndarray]] = OrderedDict()

    @classmethod
    def from_config(cls, config: EngineConfig, checkpoint: Path | None = None) -> Self:
        """Locate and load the checkpoint, choose device and backend, build the engine.

        Raises EngineUnavailable when the checkpoint is missing, unreadable or of another
        model, or when the requested device/backend cannot run here.
        """
        path = locate_checkpoint(cls.variant, config, checkpoint)
        device = resolve_device(config.device)
        backend_name = choose_backend(config.backend, device)
        try:
            model = load_wav2lip(path)
        except ValueError as e:
            raise EngineUnavailable(str(e)) from e
        backend = create_backend(
            backend_name,
            model,
            device,
            max_batch=config.max_batch,
            int8_ranges=ranges_path_for(path),
            cuda_graphs=config.cuda_graphs,
        )
        log.info("%s: %s on %s with %s", cls.name, path, device, backend_name)
        return cls(backend, checkpoint=path, max_batch=config.max_batch)

    def infer(self, requests: Sequence[LipSyncRequest]) -> list[FacePatch]:
        """One patch per request; all non-silent requests share backend calls of max_batch."""
        patches: list[FacePatch | None] = [None] * len(requests)
        todo: list[int] = []
        for i, req in enumerate(requests):
            if req.silent:
                patches[i] = FacePatch(crop_face(req.frame).copy(), req.frame.box)
            else:
                todo.append(i)
        if todo:
            mel = np.stack([mel_input(requests[i].mel) for i in todo])
            face = self._face_batch([requests[i].frame for i in todo])
            out = self._run(mel, face)
            for j, i in enumerate(todo):
                patches[i] = _to_patch(out[j], requests[i].frame.box)
        return [p for p in patches if p is not None]

    def infer_i420(
        self, requests: Sequence[LipSyncRequest], feather: bool = True
    ) -> list[np.ndarray]:
        """Finished frames on the device (see :mod:`~inference.engines.wav2lip_torch_path`)
        when the device path is on, else through the host compositor."""
        if self._frame_path is None:
            return super().infer_i420(requests, feather)
        return self._frame_path.run(requests, feather)

    def submit_i420(
        self, requests: Sequence[LipSyncRequest], feather: bool = True
    ) -> PendingFrames:
        """:meth:`infer_i420` returning once the batch is queued on the device (the device
        path on CUDA), so the caller can prepare the next batch meanwhile."""
        if self._frame_path is None:
            return super().submit_i420(requests, feather)
        return self._frame_path.submit(requests, feather)

    def warmup(self) -> None:
        """Run one full batch, and one per smaller batch bucket of the backend (the ``cuda``
        backend captures each bucket's CUDA graph on first use), so lazy kernel selection
        and capture happen before real traffic."""
        smaller = [size for size in self._backend.buckets if size < self.max_batch]
        for size in [*smaller, self.max_batch]:
            mel = np.zeros((size, 1, MEL_BANDS, MEL_STEPS), np.float32)
            face = np.zeros((size, 6, FACE_SIZE, FACE_SIZE), np.float32)
            self._run(mel, face)

    def describe(self) -> dict[str, object]:
        """Name, device and backend plus the checkpoint, batch limit and CUDA graph use
        (None off the ``cuda`` backend)."""
        info = super().describe()
        info.update(
            checkpoint=str(self.checkpoint) if self.checkpoint else None,
            variant=self.variant,
            max_batch=self.max_batch,
            device_path=self.finishes_frames,
            cuda_graphs=self._backend.graphs_state(),
        )
        return info

    def _run(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        parts = [
            self._backend.run(mel[s : s + self.max_batch], face[s : s + self.max_batch])
            for s in range(0, len(mel), self.max_batch)
        ]
        return np.concatenate(parts)

    def _face_batch(self, frames: Sequence[AvatarFrame]) -> np.ndarray:
        """(B, 6, 96, 96) float32: masked target then reference, both BGR /255."""
        return face_input(np.stack([self._small_face(f) for f in frames]))

    def _small_face(self, frame: AvatarFrame) -> np.ndarray:
        """The face crop resized to 96x96, CHW uint8, cached per prepared avatar frame."""
        key = (id(frame.image), frame.box)
        hit = self._faces.get(key)
        if hit is not None and hit[0] is frame.image:
            self._faces.move_to_end(key)
            return hit[1]
        chw = small_face(frame)
        self._faces[key] = (frame.image, chw)
        if len(self._faces) > self.cache_size:
            self._faces.popitem(last=False)
        return chw


class Wav2LipGanEngine(Wav2LipEngine):
    """Weights trained with the visual-quality GAN: sharper, shows (and may invent) teeth."""

    name = "wav2lip-gan"
    variant = "gan"


class Wav2LipNoganEngine(Wav2LipEngine):
    """Weights trained without the GAN: cleaner on stills, drawn and toothless characters."""

    name = "wav2lip-nogan"
    variant = "nogan"


def model_inputs(requests: Sequence[LipSyncRequest]) -> tuple[np.ndarray, np.ndarray]:
    """The generator's (mel, face) inputs for ``requests``, exactly as the engine builds them
    (uncached): what int8 calibration must see."""
    mel = np.stack([mel_input(r.mel) for r in requests])
    return mel, face_input(np.stack([small_face(r.frame) for r in requests]))


def _to_patch(pred: np.ndarray, box: Box) -> FacePatch:
    """(3, 96, 96) float in [0, 1] -> uint8 BGR patch of the box's size."""
    small = np.clip(pred.transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    img = cv2.resize(small, (box.width, box.height), interpolation=cv2.INTER_LINEAR)
    return FacePatch(np.asarray(img, dtype=np.uint8), box)


def create_gan_engine(
    *, config: EngineConfig | None = None, checkpoint: Path | None = None
) -> Wav2LipEngine:
    """Registry factory for ``wav2lip-gan``."""
    return Wav2LipGanEngine.from_config(config or EngineConfig(), checkpoint)


def create_nogan_engine(
    *, config: EngineConfig | None = None, checkpoint: Path | None = None
) -> Wav2LipEngine:
    """Registry factory for ``wav2lip-nogan``."""
    return Wav2LipNoganEngine.from_config(config or EngineConfig(), checkpoint)


register_engine("wav2lip-gan", create_gan_engine)
register_engine("wav2lip-nogan", create_nogan_engine)
