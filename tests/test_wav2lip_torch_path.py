"""The device path of the Wav2Lip engine, run on CPU tensors, against today's host path.

Host path: numpy crop -> model -> ``_to_patch`` (cv2.resize) -> compositor (cv2.blendLinear)
-> ``bgr_to_video_frame`` -> I420. Device path: ``TorchFramePath`` with the same backend.
The model's inputs and outputs are the same bytes; the only kernel that differs is the
96x96 -> box resize (torch bilinear vs OpenCV's fixed-point INTER_LINEAR), one grey level on
a few percent of the pixels, which is what every plane may differ by.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from inference.avatar.store import AvatarStore
from inference.compositor import composite, lower_face_complement, lower_face_mask
from inference.engines import wav2lip as wav2lip_module
from inference.engines.serial import SerialEngine
from inference.engines.wav2lip import Wav2LipEngine
from inference.engines.wav2lip_backends import Backend, create_backend
from inference.engines.wav2lip_torch_path import (
    DeviceFrames,
    TorchFramePath,
    bgr_to_i420,
    resize_linear,
)
from inference.frames import SAMPLE_RATE, AvatarFrame, Box, LipSyncRequest, MouthGeometry
from inference.lipsync import run_engine, run_engine_i420
from inference.mp4 import bgr_to_video_frame
from inference.render import render_to_mp4
from tests.test_wav2lip_engine import EchoReference
from tests.test_wav2lip_model import synthetic_model

log = logging.getLogger(__name__)

MOUTH = MouthGeometry(center_x=60, center_y=90, half_width=15, lip_height=6, chin_y=110)


def speech(frames: Sequence[AvatarFrame], silent: Sequence[int] = (), seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [
        LipSyncRequest(
            mel=rng.uniform(-4, 4, (80, 16)).astype(np.float32), frame=f, silent=i in silent
        )
        for i, f in enumerate(frames)
    ]


def host_i420(engine: Wav2LipEngine, requests: list, feather: bool = True) -> list[np.ndarray]:
    """Today's path, step by step."""
    patches = engine.infer(requests)
    return [
        bgr_to_video_frame(composite(r.frame, p, feather)).to_ndarray()
        for r, p in zip(requests, patches, strict=True)
    ]


def plane_diffs(want: np.ndarray, got: np.ndarray) -> list[tuple[int, float]]:
    """(max, mean) abs difference of the Y, U and V planes of two I420 arrays."""
    assert want.shape == got.shape and got.dtype == np.uint8
    height, width = want.shape[0] * 2 // 3, want.shape[1]
    flat = np.abs(want.astype(np.int16) - got).reshape(-1)
    luma, chroma = height * width, height * width // 4
    planes = (flat[:luma], flat[luma : luma + chroma], flat[luma + chroma :])
    return [(int(p.max()), float(p.mean())) for p in planes]


def drawn(size: tuple[int, int], box: Box, seed: int) -> AvatarFrame:
    """A smooth random picture (like a photo, unlike noise) with a face box."""
    rng = np.random.default_rng(seed)
    blurred = cv2.GaussianBlur(rng.integers(0, 256, (*size, 3), dtype=np.uint8), (0, 0), 3)
    low, high = int(blurred.min()), int(blurred.max())
    image = ((blurred.astype(np.float32) - low) * (255.0 / max(1, high - low))).astype(np.uint8)
    return AvatarFrame(image=image, box=box, mouth=MOUTH)


@pytest.fixture(scope="module")
def backend() -> Backend:
    return create_backend("torch", synthetic_model())


@pytest.fixture(scope="module")
def astronaut(avatar_store: AvatarStore) -> AvatarFrame:
    return avatar_store.get("astronaut").frames[0]


def test_matches_the_host_path_on_the_astronaut(backend: Backend, astronaut: AvatarFrame) -> None:
    host = Wav2LipEngine(backend, max_batch=3)
    device = Wav2LipEngine(backend, max_batch=3, device_path=True)
    assert device.finishes_frames and not host.finishes_frames
    requests = speech([astronaut] * 5, silent=(2,))  # 2 model calls of <= 3, one silent
    want = host_i420(host, requests)
    got = device.infer_i420(requests)
    assert len(got) == len(want)
    worst = [0, 0, 0]
    for w, g in zip(want, got, strict=True):
        diffs = plane_diffs(w, g)
        log.info("Y/U/V (max, mean) %s", diffs)
        for p, (most, _) in enumerate(diffs):
            worst[p] = max(worst[p], most)
    assert worst[0] <= 1 and worst[1] <= 1 and worst[2] <= 1, worst
    np.testing.assert_array_equal(got[2], want[2])  # silent: the frame as it is
    assert plane_diffs(got[2], got[0])[0][1] > 0.5  # and the model did draw a mouth


def test_plain_paste_matches_too(backend: Backend, astronaut: AvatarFrame) -> None:
    host = Wav2LipEngine(backend, max_batch=2)
    device = Wav2LipEngine(backend, max_batch=2, device_path=True)
    requests = speech([astronaut] * 2, seed=4)
    plain = device.infer_i420(requests, False)
    for w, g in zip(host_i420(host, requests, False), plain, strict=True):
        assert max(most for most, _ in plane_diffs(w, g)) <= 1


def test_mixed_sizes_odd_and_small_boxes(backend: Backend, astronaut: AvatarFrame) -> None:
    """Two frame sizes in one batch, odd box edges, a box under 96 px (the resize shrinks),
    a box on the frame's edge, a frame repeated out of order (index uploads, not slices)."""
    wide = drawn((240, 320), Box(33, 41, 111, 127), 1)
    small = drawn((240, 320), Box(200, 101, 251, 161), 2)
    edge = drawn((240, 320), Box(241, 99, 320, 240), 3)
    frames = [wide, astronaut, small, wide, edge, astronaut, wide]
    requests = speech(frames, silent=(5,), seed=9)
    host = Wav2LipEngine(backend, max_batch=4)
    device = Wav2LipEngine(backend, max_batch=4, device_path=True)
    for w, g in zip(host_i420(host, requests), device.infer_i420(requests), strict=True):
        assert max(most for most, _ in plane_diffs(w, g)) <= 1
    path = device._frame_path
    assert path is not None and len(path.frames) == 4  # each frame loaded once


def test_mouths_are_the_host_paths_own_bytes(backend: Backend, astronaut: AvatarFrame) -> None:
    path = TorchFramePath(backend, "cpu", max_batch=2)
    requests = speech([astronaut] * 3, seed=2)
    residents = [path.frames.get(r.frame) for r in requests]
    with torch.inference_mode():
        mouths = path._mouths(requests, residents).numpy()
    host = Wav2LipEngine(backend, max_batch=2)
    mel = np.stack([r.mel[None] for r in requests])
    pred = host._run(mel, host._face_batch([r.frame for r in requests]))
    want = np.clip(pred * 255.0 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(mouths.astype(np.uint8), want)


def test_i420_and_blend_are_opencvs_numbers() -> None:
    rng = np.random.default_rng(0)
    for height, width in [(2, 2), (6, 10), (98, 130), (512, 512)]:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        y, u, v = bgr_to_i420(torch.from_numpy(image)[None])
        got = np.concatenate([p.numpy().reshape(-1) for p in (y, u, v)])
        want = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420).reshape(-1)
        np.testing.assert_array_equal(got, want)
    height, width = 97, 61
    patch, region = (rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in "ab")
    alpha, complement = lower_face_mask(height, width), lower_face_complement(height, width)
    a, c = (torch.from_numpy(m.copy())[..., None] for m in (alpha, complement))
    mixed = (torch.from_numpy(patch).float() * a + torch.from_numpy(region).float() * c) / (
        a + c + 1e-5
    )
    want = cv2.blendLinear(patch, region, alpha, complement)
    np.testing.assert_array_equal(torch.round(mixed).numpy().astype(np.uint8), want)


@pytest.mark.parametrize("size", [(193, 160), (60, 50), (96, 96), (250, 201)])
def test_resize_kernel_choice(size: tuple[int, int]) -> None:
    """torch bilinear (half-pixel, no antialias) is cv2.INTER_LINEAR within one level (the
    fixed-point rounding of OpenCV); antialias=True is not, once the resize shrinks."""
    height, width = size
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    small = np.stack([cv2.GaussianBlur(n, (0, 0), 1) for n in noise])
    want = np.stack([cv2.resize(s, (width, height), interpolation=cv2.INTER_LINEAR) for s in small])
    levels = torch.from_numpy(small).permute(0, 3, 1, 2).float()
    got = resize_linear(levels, height, width).numpy()
    diff = np.abs(got - want)
    log.info(
        "resize %s: max %d, %.1f%% of pixels one level off", size, diff.max(), 100 * diff.mean()
    )
    assert diff.max() <= 1 and (diff > 0).mean() < 0.2
    if size == (96, 96):
        assert diff.max() == 0
    if height < 96:
        smoothed = F.interpolate(levels, size=size, mode="bilinear", antialias=True)
        assert np.abs(smoothed.permute(0, 2, 3, 1).numpy().round() - want).max() > 1


def test_silent_empty_and_any_backend(astronaut: AvatarFrame) -> None:
    """A numpy-only backend (the default run_tensors) works; silent-only batches skip the
    model; an empty batch is empty."""
    echo = EchoReference()
    path = TorchFramePath(echo, "cpu")
    assert path.run([]) == []
    (still,) = path.run(speech([astronaut], silent=(0,)))
    assert echo.calls == []
    np.testing.assert_array_equal(still, cv2.cvtColor(astronaut.image, cv2.COLOR_BGR2YUV_I420))
    (echoed,) = path.run(speech([astronaut]))
    assert len(echo.calls) == 1
    host = Wav2LipEngine(EchoReference())
    assert (
        max(most for most, _ in plane_diffs(host_i420(host, speech([astronaut]))[0], echoed)) <= 1
    )


def test_resident_frames_are_loaded_once_and_bounded(astronaut: AvatarFrame) -> None:
    frames = DeviceFrames(torch.device("cpu"))
    first = frames.get(astronaut)
    assert frames.get(astronaut) is first and len(frames) == 1
    assert first.crop.shape == (3, 96, 96) and first.i420.dtype == torch.uint8
    assert first.even.x1 % 2 == 0 and first.even.y2 % 2 == 0
    others = [drawn((64, 64), Box(9, 9, 41, 51), s) for s in range(3)]
    bounded = DeviceFrames(torch.device("cpu"), max_bytes=2 * frames.get(others[0]).nbytes)
    for frame in others:
        bounded.get(frame)
    assert len(bounded) == 2 and bounded.nbytes <= bounded.max_bytes
    odd = AvatarFrame(image=np.zeros((63, 64, 3), np.uint8), box=Box(0, 0, 32, 32), mouth=MOUTH)
    with pytest.raises(ValueError, match="even sizes"):
        frames.get(odd)
    empty = AvatarFrame(image=np.zeros((64, 64, 3), np.uint8), box=Box(5, 5, 5, 9), mouth=MOUTH)
    with pytest.raises(ValueError, match="face box"):
        frames.get(empty)


def test_the_path_is_chosen_on_cuda_only(
    backend: Backend, astronaut: AvatarFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []

    class Recorded(TorchFramePath):
        def __init__(self, backend: Backend, device: str, max_batch: int) -> None:
            made.append(device)

    class OnCuda(EchoReference):
        device = "cuda:1"

    monkeypatch.setattr(wav2lip_module, "TorchFramePath", Recorded)
    assert not Wav2LipEngine(backend).finishes_frames and made == []
    engine = Wav2LipEngine(OnCuda())
    assert engine.finishes_frames and made == ["cuda:1"]
    assert engine.describe()["device_path"] is True
    assert not Wav2LipEngine(OnCuda(), device_path=False).finishes_frames
    # Without the path, infer_i420 is the base class's host compositor, exactly.
    requests = speech([astronaut] * 2, seed=3)
    host = Wav2LipEngine(backend)
    got = host.infer_i420(requests)
    assert [g.tobytes() for g in got] == [w.tobytes() for w in host_i420(host, requests)]


def test_the_servers_serial_wrapper_passes_finished_frames_on(
    backend: Backend, astronaut: AvatarFrame
) -> None:
    inner = Wav2LipEngine(backend, max_batch=2, device_path=True)
    serial = SerialEngine(inner)
    assert serial.finishes_frames
    requests = speech([astronaut] * 2, seed=8)
    got = serial.infer_i420(requests)
    assert [g.tobytes() for g in got] == [w.tobytes() for w in inner.infer_i420(requests)]
    assert serial.stats.batch_sizes.counts[1] == 1  # one call of 2 frames, counted
    assert not SerialEngine(Wav2LipEngine(backend)).finishes_frames


def test_submitted_batches_come_back_as_run_would_make_them(
    backend: Backend, astronaut: AvatarFrame
) -> None:
    """Several batches in flight at once (as the batcher keeps them on CUDA), collected in
    any order: each is what a synchronous run of it gives, nothing shared between them."""
    path = TorchFramePath(backend, "cpu", max_batch=2)
    small = drawn((64, 80), Box(10, 10, 50, 52), seed=4)
    batches = [
        speech([astronaut] * 3, seed=11),
        speech([small, astronaut], silent=(0,), seed=12),
        speech([astronaut], seed=13),
    ]
    pending = [path.submit(b) for b in batches]
    assert path.submit([]).result() == []
    assert all(p.ready() for p in pending)  # CPU tensors: done when submit returns
    for requests, waiting in reversed(list(zip(batches, pending, strict=True))):
        got = waiting.result()
        want = path.run(requests)
        assert [g.tobytes() for g in got] == [w.tobytes() for w in want]


def test_the_serial_wrapper_counts_a_submitted_batch_once(
    backend: Backend, astronaut: AvatarFrame
) -> None:
    inner = Wav2LipEngine(backend, max_batch=2, device_path=True)
    serial = SerialEngine(inner)
    requests = speech([astronaut] * 2, seed=9)
    pending = serial.submit_i420(requests)
    first, again = pending.result(), pending.result()
    assert [g.tobytes() for g in first] == [w.tobytes() for w in inner.infer_i420(requests)]
    assert [a.tobytes() for a in again] == [f.tobytes() for f in first]
    assert serial.stats.batch_sizes.counts[1] == 1 and serial.stats.failures == 0
    broken = speech([drawn((65, 80), Box(10, 10, 50, 52), seed=1)])  # odd: no I420 frame
    with pytest.raises(ValueError, match="even sizes"):
        serial.submit_i420(broken)
    assert serial.stats.failures == 1 and serial.stats.batch_sizes.counts[1] == 1


def test_renders_take_finished_frames_from_the_device(
    backend: Backend, astronaut: AvatarFrame
) -> None:
    device = Wav2LipEngine(backend, max_batch=2, device_path=True)
    host = Wav2LipEngine(backend, max_batch=2)
    requests = speech([astronaut] * 5, silent=(2,), seed=14)
    got = run_engine_i420(device, requests, True)
    want = run_engine_i420(host, requests, True)
    assert len(got) == len(want) == 5
    for w, g in zip(want, got, strict=True):
        assert max(most for most, _ in plane_diffs(w, g)) <= 1
    # The host route is the compositor and one OpenCV conversion, byte for byte.
    converted = [cv2.cvtColor(i, cv2.COLOR_BGR2YUV_I420) for i in run_engine(host, requests, True)]
    assert [w.tobytes() for w in want] == [c.tobytes() for c in converted]


def test_a_render_on_the_device_path_writes_its_frames(
    backend: Backend, avatar_store: AvatarStore, tmp_path: Path
) -> None:
    calls: list[int] = []

    class Counted(Wav2LipEngine):
        def submit_i420(self, requests: Sequence[LipSyncRequest], feather: bool = True):
            calls.append(len(requests))
            return super().submit_i420(requests, feather)

    engine = Counted(backend, max_batch=8, device_path=True)
    pcm = (0.3 * np.sin(np.arange(SAMPLE_RATE) * 0.05)).astype(np.float32)  # 1 s: 25 frames
    stats = render_to_mp4(pcm, avatar_store.get("astronaut"), engine, tmp_path / "gpu.mp4")
    assert sum(calls) == stats.frames == 25 and max(calls) == 8
    with av.open(str(tmp_path / "gpu.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 25


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_on_cuda_matches_the_host_path_with_the_same_backend(astronaut: AvatarFrame) -> None:
    cuda = create_backend("cuda", synthetic_model(), "cuda", max_batch=4)
    host = Wav2LipEngine(cuda, max_batch=4, device_path=False)
    device = Wav2LipEngine(cuda, max_batch=4)
    assert device.finishes_frames
    requests = speech([astronaut] * 4, silent=(1,))
    for w, g in zip(host_i420(host, requests), device.infer_i420(requests), strict=True):
        assert max(most for most, _ in plane_diffs(w, g)) <= 1
    # Two batches in flight on the device (compute and copy streams), collected late: the
    # same bytes as run one at a time.
    later = speech([astronaut] * 3, seed=6)
    first, second = device.submit_i420(requests), device.submit_i420(later)
    for want, got in ((device.infer_i420(later), second), (device.infer_i420(requests), first)):
        assert [w.tobytes() for w in want] == [g.tobytes() for g in got.result()]
