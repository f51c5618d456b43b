"""Wav2Lip's per-batch work on a torch device, from gathered crops to finished I420 planes.

The host path (numpy/OpenCV per frame: stack the crops, run the model, resize each mouth back,
feathered blend into a copy of the frame, BGR -> I420) is CPU work for every frame of every
session, done while a GPU waits. Here everything after loading the avatar stays on the
engine's device and only the finished I420 planes of each batch cross to the host: on CUDA
into pinned memory by non-blocking copies on a stream of their own, waited for with one event
(no device-wide synchronize). :meth:`TorchFramePath.submit` returns before that event: batch
n+1 is then prepared and queued while batch n runs and batch n-1 is copied back. The same
code runs on CPU tensors, which is how the tests compare it with the host path.

Once per avatar frame, on the host with OpenCV (so these are the host path's own bytes): the
96x96 model crop, the frame's I420 planes, and the BGR pixels of its face box grown to even
edges. A 2x2 chroma block then never straddles that region, so converting the region alone
gives the planes that converting the whole frame would.

The kernels (resize, blend, BGR -> I420) and how they match OpenCV's: wav2lip_torch_kernels.py.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from inference.compositor import lower_face_complement, lower_face_mask
from inference.engines.base import PendingFrames
from inference.engines.wav2lip_backends import Backend
from inference.engines.wav2lip_inputs import mel_input, small_face
from inference.engines.wav2lip_torch_kernels import (
    bgr_to_i420,
    even_box,
    face_tensor,
    resize_linear,
)
from inference.frames import AvatarFrame, Box, LipSyncRequest

__all__ = [
    "DeviceFrames",
    "PendingPlanes",
    "ResidentFrame",
    "TorchFramePath",
    "bgr_to_i420",
    "resize_linear",
]

DEFAULT_MAX_BYTES = 2 << 30
"""Device memory the resident avatar frames may take (about 5,000 frames of 512x512)."""


@dataclass(frozen=True)
class ResidentFrame:
    """One avatar frame held on the device."""

    i420: torch.Tensor
    """(h * w * 3 // 2,) uint8: the frame's Y, U and V planes one after the other."""
    region: torch.Tensor
    """(even.height, even.width, 3) uint8 BGR: the frame's pixels inside ``even``."""
    crop: torch.Tensor
    """(3, 96, 96) uint8 BGR: the model's face crop (``wav2lip_inputs.small_face``)."""
    box: Box
    even: Box
    """``box`` grown to even edges: the part of the planes a pasted mouth can change."""
    size: tuple[int, int]
    """(height, width) of the frame."""

    @property
    def nbytes(self) -> int:
        """Device bytes held."""
        return sum(t.numel() * t.element_size() for t in (self.i420, self.region, self.crop))


class DeviceFrames:
    """Avatar frames resident on one device, keyed by the frame itself (frames compare by
    identity and are prepared once per avatar); the least recently used go past
    ``max_bytes``."""

    def __init__(self, device: torch.device, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.device = device
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._frames: OrderedDict[AvatarFrame, ResidentFrame] = OrderedDict()

    def __len__(self) -> int:
        return len(self._frames)

    def get(self, frame: AvatarFrame) -> ResidentFrame:
        """The resident copy of ``frame``, loaded on first use.

        ValueError for a face box that gives no crop, or an odd-sized frame (I420 has no
        odd sizes).
        """
        hit = self._frames.get(frame)
        if hit is not None:
            self._frames.move_to_end(frame)
            return hit
        resident = self._load(frame)
        self._frames[frame] = resident
        self.nbytes += resident.nbytes
        while self.nbytes > self.max_bytes and len(self._frames) > 1:
            _, old = self._frames.popitem(last=False)
            self.nbytes -= old.nbytes
        return resident

    def _load(self, frame: AvatarFrame) -> ResidentFrame:
        crop = small_face(frame)
        image = frame.image
        height, width = image.shape[:2]
        if height % 2 or width % 2:
            raise ValueError(f"avatar frame is {width}x{height}; I420 frames need even sizes")
        even = even_box(frame.box, height, width)
        planes = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420).reshape(-1)
        region = image[even.y1 : even.y2, even.x1 : even.x2]
        return ResidentFrame(
            i420=self._put(planes),
            region=self._put(region),
            crop=self._put(crop),
            box=frame.box,
            even=even,
            size=(height, width),
        )

    def _put(self, array: np.ndarray) -> torch.Tensor:
        # A copy: avatar images are read-only, which torch.from_numpy refuses to share.
        return torch.from_numpy(np.array(array, copy=True)).to(self.device)


class TorchFramePath:
    """Finished I420 frames for batches of requests, computed on ``device``.

    ``backend`` runs the generator (:meth:`Backend.run_tensors`: the CUDA backend in fp16 on
    a GPU, the torch backend in fp32 on CPU tensors), in calls of at most ``max_batch``.
    Thread-confined like the engine that owns it.
    """

    def __init__(
        self,
        backend: Backend,
        device: str | torch.device = "cpu",
        max_batch: int = 16,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.device = torch.device(device)
        self.max_batch = max(1, max_batch)
        self.frames = DeviceFrames(self.device, max_bytes)
        self._backend = backend
        self._cuda = self.device.type == "cuda"
        self._stream = torch.cuda.Stream(self.device) if self._cuda else None
        # Copies to the host get their own stream so one batch's copy overlaps the next
        # batch's kernels (GPUs copy and compute on separate engines).
        self._copy_stream = torch.cuda.Stream(self.device) if self._cuda else None
        # (h, w) -> alpha, complement, alpha + complement + 1e-5: each (h, w, 1) float32.
        self._masks: dict[tuple[int, int], tuple[torch.Tensor, ...]] = {}

    def run(self, requests: Sequence[LipSyncRequest], feather: bool = True) -> list[np.ndarray]:
        """One uint8 I420 array (h * 3 // 2, w) per request (OpenCV's layout), in order;
        silent requests show their frame as it is. The arrays are views of one host buffer
        per frame size and keep it alive."""
        return self.submit(requests, feather).result()

    def submit(self, requests: Sequence[LipSyncRequest], feather: bool = True) -> PendingPlanes:
        """Queue :meth:`run`'s work and return without waiting for the device: on CUDA the
        batch is computed on the path's stream and copied back on a second one, so the
        caller can prepare (and queue) the next batch while this one runs and the one before
        crosses to the host. On CPU tensors the work is done when this returns."""
        if not requests:
            return PendingPlanes([], [], None)
        with self._on_stream(), torch.inference_mode():
            residents = [self.frames.get(r.frame) for r in requests]
            todo = [i for i, r in enumerate(requests) if not r.silent]
            mouths = self._mouths([requests[i] for i in todo], [residents[i] for i in todo])
            row_of = {i: j for j, i in enumerate(todo)}
            outputs: list[tuple[list[int], torch.Tensor]] = []
            for positions in _by_size(residents):
                planes = torch.stack([residents[i].i420 for i in positions])
                spoken = [(k, row_of[i]) for k, i in enumerate(positions) if i in row_of]
                self._paste(planes, [residents[i] for i in positions], spoken, mouths, feather)
                outputs.append((positions, planes))
            copied = self._to_host(outputs)
        sizes = [residents[positions[0]].size for positions, _ in outputs]
        return PendingPlanes(copied, sizes, self._copied_event(), len(requests))

    def _mouths(
        self, requests: Sequence[LipSyncRequest], residents: Sequence[ResidentFrame]
    ) -> torch.Tensor:
        """(m, 3, 96, 96) float32 whole grey levels: the generator's mouths, rounded like
        the host path rounds them (x255 + 0.5, clipped, truncated)."""
        if not requests:
            return torch.empty((0, 3, 96, 96), device=self.device)
        mel = self._upload(np.stack([mel_input(r.mel) for r in requests]))
        face = face_tensor(torch.stack([r.crop for r in residents]))
        step = self.max_batch
        parts = [
            self._backend.run_tensors(mel[s : s + step], face[s : s + step])
            for s in range(0, len(mel), step)
        ]
        return torch.floor((torch.cat(parts) * 255.0 + 0.5).clamp_(0, 255))

    def _paste(
        self,
        planes: torch.Tensor,
        residents: Sequence[ResidentFrame],
        spoken: Sequence[tuple[int, int]],
        mouths: torch.Tensor,
        feather: bool,
    ) -> None:
        """Paste ``mouths[row]`` into ``planes[k]`` for each (k, row) of ``spoken``; frames
        sharing a face box go through each kernel together."""
        height, width = residents[0].size
        y, u, v = _plane_views(planes, height, width)
        groups: dict[tuple[Box, Box], list[tuple[int, int]]] = {}
        for k, row in spoken:
            groups.setdefault((residents[k].box, residents[k].even), []).append((k, row))
        for (box, even), items in groups.items():
            patch = resize_linear(
                mouths[self._index([row for _, row in items])], box.height, box.width
            )
            region = torch.stack([residents[k].region for k, _ in items])
            window = region[
                :, box.y1 - even.y1 : box.y2 - even.y1, box.x1 - even.x1 : box.x2 - even.x1
            ]
            if feather:
                alpha, complement, weight = self._mask(box.height, box.width)
                mixed = (patch * alpha + window.float() * complement) / weight
                window.copy_(torch.round(mixed).clamp_(0, 255))
            else:
                window.copy_(patch)
            ys, us, vs = bgr_to_i420(region)
            at = self._index([k for k, _ in items])
            y[at, even.y1 : even.y2, even.x1 : even.x2] = ys
            u[at, even.y1 // 2 : even.y2 // 2, even.x1 // 2 : even.x2 // 2] = us
            v[at, even.y1 // 2 : even.y2 // 2, even.x1 // 2 : even.x2 // 2] = vs

    def _mask(self, height: int, width: int) -> tuple[torch.Tensor, ...]:
        """The compositor's feather mask for a box size, on the device, made once."""
        key = (height, width)
        hit = self._masks.get(key)
        if hit is None:
            alpha = self._upload(lower_face_mask(height, width).copy())[..., None]
            complement = self._upload(lower_face_complement(height, width).copy())[..., None]
            hit = self._masks[key] = (alpha, complement, alpha + complement + 1e-5)
        return hit

    def _index(self, rows: list[int]) -> slice | torch.Tensor:
        """Rows as a slice when consecutive (the usual batch of one avatar: no index upload),
        else an index tensor on the device."""
        if rows == list(range(rows[0], rows[0] + len(rows))):
            return slice(rows[0], rows[0] + len(rows))
        return self._upload(np.asarray(rows, dtype=np.int64))

    def _upload(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if not self._cuda:
            return tensor
        # Pinned, so the copy is asynchronous on our stream; torch keeps the pinned block
        # until the copy has run even though the tensor is dropped at once.
        return tensor.pin_memory().to(self.device, non_blocking=True)

    def _to_host(
        self, outputs: list[tuple[list[int], torch.Tensor]]
    ) -> list[tuple[list[int], torch.Tensor]]:
        """The planes' copies into pinned host memory, queued on the copy stream once the
        compute stream has made them (CUDA); the planes themselves on CPU."""
        if self._copy_stream is None or self._stream is None:
            return outputs
        computed = torch.cuda.Event()
        computed.record(self._stream)
        self._copy_stream.wait_event(computed)
        copied: list[tuple[list[int], torch.Tensor]] = []
        with torch.cuda.stream(self._copy_stream):
            for positions, planes in outputs:
                host = torch.empty(planes.shape, dtype=planes.dtype, pin_memory=True)
                host.copy_(planes, non_blocking=True)
                # The planes were allocated on the compute stream: without this the caching
                # allocator could hand their memory to the next batch before the copy ran.
                planes.record_stream(self._copy_stream)
                copied.append((positions, host))
        return copied

    def _copied_event(self) -> torch.cuda.Event | None:
        """An event the host waits on for this batch alone (no device-wide synchronize)."""
        if self._copy_stream is None:
            return None
        done = torch.cuda.Event()
        done.record(self._copy_stream)
        return done

    def _on_stream(self) -> AbstractContextManager[object]:
        if self._stream is None:
            return contextlib.nullcontext()
        return torch.cuda.stream(self._stream)


class PendingPlanes(PendingFrames):
    """One submitted batch's I420 planes on their way to the host (see
    :meth:`TorchFramePath.submit`)."""

    def __init__(
        self,
        outputs: list[tuple[list[int], torch.Tensor]],
        sizes: list[tuple[int, int]],
        done: torch.cuda.Event | None,
        count: int = 0,
    ) -> None:
        self._outputs = outputs
        self._sizes = sizes
        self._done = done
        self._count = count

    def ready(self) -> bool:
        return self._done is None or bool(self._done.query())

    def result(self) -> list[np.ndarray]:
        if self._done is not None:
            self._done.synchronize()
        frames: list[np.ndarray] = [np.empty(0, np.uint8)] * self._count
        for (positions, host), (height, width) in zip(self._outputs, self._sizes, strict=True):
            batch = host.numpy().reshape(len(positions), height * 3 // 2, width)
            for k, i in enumerate(positions):
                frames[i] = batch[k]
        return frames


def _by_size(residents: Sequence[ResidentFrame]) -> list[list[int]]:
    """Positions of the frames of each frame size, in order of first appearance."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, resident in enumerate(residents):
        groups.setdefault(resident.size, []).append(i)
    return list(groups.values())


def _plane_views(
    planes: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Y (n, h, w), U and V (n, h/2, w/2) views into flat (n, h * w * 3 // 2) planes."""
    luma, chroma = height * width, height * width // 4
    return (
        planes[:, :luma].view(-1, height, width),
        planes[:, luma : luma + chroma].view(-1, height // 2, width // 2),
        planes[:, luma + chroma :].view(-1, height // 2, width // 2),
    )
