"""Wav2Lip's per-batch work on a torch device, from gathered crops to finished I420 planes.

The host path (numpy/OpenCV per frame: stack the crops, run the model, resize each mouth back,
feathered blend into a copy of the frame, BGR -> I420) is CPU work for every frame of every
session, done while a GPU waits. Here everything after loading the avatar stays on the
engine's device and only the finished I420 planes of each batch cross to the host: on CUDA
into pinned memory by non-blocking copies on a private stream, waited for with one event (no
device-wide synchronize). The same code runs on CPU tensors, which is how the tests compare
it with the host path.

Once per avatar frame, on the host with OpenCV (so these are the host path's own bytes): the
96x96 model crop, the frame's I420 planes, and the BGR pixels of its face box grown to even
edges. A 2x2 chroma block then never straddles that region, so converting the region alone
gives the planes that converting the whole frame would.

Kernels per batch, against OpenCV as the host path calls it:
- mouth 96x96 -> face box: bilinear with half-pixel centres and no antialias, the geometry of
  ``cv2.INTER_LINEAR`` (what the host path uses both ways; it never uses INTER_AREA). OpenCV
  computes in fixed point (11-bit weights), so 12-13% of the resized pixels come out one
  level apart, never more. ``antialias=True`` would average like INTER_AREA when the box is
  under 96 px (3 levels from INTER_LINEAR on a blurred picture, 125 on noise): not used.
- feathered blend: ``cv2.blendLinear``'s formula (the weighted sum divided by the weights'
  sum + 1e-5, rounded half to even): the same numbers.
- BGR -> I420: OpenCV's BT.601 limited-range integers (20-bit weights), chroma from the
  top-left pixel of each 2x2 block: the same numbers (checked against OpenCV 4.14).
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
import torch.nn.functional as F

from inference.compositor import lower_face_complement, lower_face_mask
from inference.engines.wav2lip_backends import Backend
from inference.engines.wav2lip_inputs import HALF, mel_input, small_face
from inference.frames import AvatarFrame, Box, LipSyncRequest

__all__ = ["DeviceFrames", "ResidentFrame", "TorchFramePath", "bgr_to_i420", "resize_linear"]

DEFAULT_MAX_BYTES = 2 << 30
"""Device memory the resident avatar frames may take (about 5,000 frames of 512x512)."""

# OpenCV's BGR -> YUV I420 weights (BT.601, limited range) scaled by 2^20, as (B, G, R).
_SHIFT = 20
_Y_WEIGHTS = (102760, 528482, 269484)
_U_WEIGHTS = (460324, -305135, -155188)
_V_WEIGHTS = (-74448, -385875, 460324)
_Y_OFFSET = (16 << _SHIFT) + (1 << (_SHIFT - 1))
_C_OFFSET = (128 << _SHIFT) + (1 << (_SHIFT - 1))


def even_box(box: Box, height: int, width: int) -> Box:
    """``box`` grown to even edges, within a frame of even ``height`` and ``width``."""
    return Box(
        box.x1 - box.x1 % 2,
        box.y1 - box.y1 % 2,
        min(width, box.x2 + box.x2 % 2),
        min(height, box.y2 + box.y2 % 2),
    )


def bgr_to_i420(bgr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(n, h, w, 3) uint8 BGR with h and w even -> Y (n, h, w), U and V (n, h/2, w/2) uint8:
    ``cv2.COLOR_BGR2YUV_I420``'s numbers."""
    pixels = bgr.to(torch.int32)  # the weighted sums need 28 bits
    corners = pixels[:, ::2, ::2]
    return (
        _weigh(pixels, _Y_WEIGHTS, _Y_OFFSET),
        _weigh(corners, _U_WEIGHTS, _C_OFFSET),
        _weigh(corners, _V_WEIGHTS, _C_OFFSET),
    )


def _weigh(pixels: torch.Tensor, weights: tuple[int, int, int], offset: int) -> torch.Tensor:
    b, g, r = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    total = b * weights[0] + g * weights[1] + r * weights[2] + offset
    return (total >> _SHIFT).to(torch.uint8)


def resize_linear(small: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(n, 3, h0, w0) float grey levels -> (n, height, width, 3) float whole levels, within
    one level of ``cv2.resize(..., INTER_LINEAR)`` on the uint8 image (see the module doc)."""
    big = F.interpolate(
        small, size=(height, width), mode="bilinear", align_corners=False, antialias=False
    )
    return torch.floor(big + 0.5).clamp_(0, 255).permute(0, 2, 3, 1)


def face_tensor(crops: torch.Tensor) -> torch.Tensor:
    """(B, 3, 96, 96) uint8 crops -> the generator's (B, 6, 96, 96) float32 face input, built
    like ``wav2lip_inputs.face_input``: masked target, then reference, /255."""
    scaled = crops.float() * (1.0 / 255.0)
    face = torch.cat([scaled, scaled], dim=1)
    face[:, :3, HALF:] = 0.0  # the model must not see the mouth it has to draw
    return face


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
        # (h, w) -> alpha, complement, alpha + complement + 1e-5: each (h, w, 1) float32.
        self._masks: dict[tuple[int, int], tuple[torch.Tensor, ...]] = {}

    def run(self, requests: Sequence[LipSyncRequest], feather: bool = True) -> list[np.ndarray]:
        """One uint8 I420 array (h * 3 // 2, w) per request (OpenCV's layout), in order;
        silent requests show their frame as it is. The arrays are views of one host buffer
        per frame size and keep it alive."""
        if not requests:
            return []
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
                outputs.append((positions, self._to_host(planes)))
            self._wait()
        frames: list[np.ndarray] = [np.empty(0, np.uint8)] * len(requests)
        for positions, host in outputs:
            height, width = residents[positions[0]].size
            batch = host.numpy().reshape(len(positions), height * 3 // 2, width)
            for k, i in enumerate(positions):
                frames[i] = batch[k]
        return frames

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

    def _to_host(self, planes: torch.Tensor) -> torch.Tensor:
        if not self._cuda:
            return planes
        host = torch.empty(planes.shape, dtype=planes.dtype, pin_memory=True)
        host.copy_(planes, non_blocking=True)
        return host

    def _wait(self) -> None:
        """Block until this batch's copies to the host are done: one event on our stream,
        so other streams (other engines, other work) are not waited for."""
        if self._stream is not None:
            done = torch.cuda.Event()
            done.record(self._stream)
            done.synchronize()

    def _on_stream(self) -> AbstractContextManager[object]:
        if self._stream is None:
            return contextlib.nullcontext()
        return torch.cuda.stream(self._stream)


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
