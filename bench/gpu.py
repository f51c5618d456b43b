"""The Wav2Lip engine on a CUDA GPU: agreement with fp32, generator speed, the device path.

    python bench/gpu.py                  # on the GPU machine: steps 1-3, prints markdown
    python bench/gpu.py --write          # ... and replaces its section of docs/benchmarks.md
    python bench/gpu.py --cpu-smoke      # steps 1 and 3, tiny, on CPU: the script runs at all
                                         # (the CUDA tests run too, and are skipped)
    python bench/gpu.py --device cpu --quick   # all four steps rehearsed on CPU, tiny (no docs)
    python bench/gpu.py --live-only      # step 4 alone (--no-live: steps 1-3 alone)

1. Agreement, one random-weight checkpoint (saved and loaded like a user's file): the ``cuda``
   backend (fp16, BatchNorm folded, channels_last) against ``torch`` fp32 on the CPU, max and
   mean abs difference of the [0, 1] output; then the engine's device path
   (``inference/engines/wav2lip_torch_path.py``) against today's host path with the CPU fp32
   model (numpy crop, compositor, OpenCV I420), per plane in grey levels.
2. The generator alone per batch size (1 .. 128): fp32 (cuDNN may use TF32 for convolutions,
   torch's default), fp16, fp16 + channels_last (what the ``cuda`` backend runs) and that
   replayed as a CUDA graph captured for each batch size (a fixed bucket).
3. The whole batch: the device path (gather -> model -> paste -> I420 -> pinned host planes),
   one call at a time and with the next batch queued before the last is collected (the live
   batcher's overlap), against the host path with the same ``cuda`` backend, frames per
   second per batch size.

4. N live sessions over loopback WebRTC (bench/gpu_live.py): the server in its own process
   on this checkpoint, clients in other processes, N = 8, 16, 32, 64, 128, 256 until a level
   is not sustained (every session >= 24 fresh fps); fresh fps, text -> first frame,
   mouth/audio lag, GPU utilisation and server CPU per session.

Before them, ``tests/test_wav2lip_cuda.py`` (the parity and graph checks, skipped without a
GPU) runs in a subprocess and its pytest summary line heads the report; ``--skip-tests``
leaves it out. It runs with ``--noconftest``: tests/conftest.py imports aiortc.

Steps 1-3 import neither aiortc nor av (nor librosa); the avatar is ``avatars/astronaut.jpg``
read with OpenCV and the face box the avatar store finds for it, the host path's I420 is
``cv2.cvtColor`` (what ``inference.mp4.bgr_to_video_frame`` calls). Step 4 needs the server's
whole stack, which the GPU machine lacks: bench/gpu_wheels.sh downloads it here as wheels
into .whl/ (bench/gpu_wheels.txt; with the astronaut's prepared face: OpenCV 5 cannot detect
it), and the device call is this one line (``carry: [".whl"]``,
``timeout_s`` 600; it is ``bench.gpu_live.DEVICE_COMMAND``):

    python3 -c "import tarfile; tarfile.open('.whl/wheels.tar.xz').extractall('/tmp/whl', filter='data')" && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site /tmp/whl/*.whl && export PYTHONPATH=/tmp/site || exit; python3 -c 'import aiortc, av, librosa, pydantic, espeakng_loader' || exit; set -o pipefail; PYTHONUNBUFFERED=1 timeout 560 python3 bench/gpu.py --write 2>&1 | tee $OUT/gpu.log; rc=$?; cp docs/benchmarks.md $OUT/; nvidia-smi >> $OUT/gpu.log; exit $rc
"""  # noqa: E501 (the device call is one line)

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # allow `python bench/gpu.py` from anywhere
    sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.gpu_generator import measure_generator  # noqa: E402
from bench.gpu_live import NO_LIVE, add_live_options, live_step  # noqa: E402
from bench.gpu_live_report import LIVE_HEADING  # noqa: E402
from bench.report import DOCS, cpu_model, write_section  # noqa: E402
from inference.compositor import composite  # noqa: E402
from inference.engines.base import PendingFrames  # noqa: E402
from inference.engines.wav2lip import Wav2LipEngine  # noqa: E402
from inference.engines.wav2lip_backends import Backend, create_backend  # noqa: E402
from inference.engines.wav2lip_calibrate import synthetic_batches  # noqa: E402
from inference.engines.wav2lip_model import Wav2Lip  # noqa: E402
from inference.engines.wav2lip_synthetic import random_checkpoint  # noqa: E402
from inference.frames import AvatarFrame, Box, LipSyncRequest, MouthGeometry  # noqa: E402

SECTION = "## GPU (bench/gpu.py)"
ASTRONAUT = ROOT / "avatars" / "astronaut.jpg"
ASTRONAUT_BOX = Box(169, 119, 329, 312)
"""The face box the avatar store found for the astronaut when this was written (the store
needs av, absent on the GPU machine). Speed depends only on the sizes, agreement on none."""
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)
CUDA_TESTS = "tests/test_wav2lip_cuda.py"
PYTEST = ("pytest", "-q", "-rA", "--noconftest", "-p", "no:cacheprovider")
"""How the CUDA tests run: no conftest (it imports aiortc), no cache written into the tree."""
NO_CUDA = (
    "bench/gpu.py needs a CUDA GPU, and torch {version} sees none "
    "(built for CUDA: {cuda}). Run it on the GPU machine, or check the script here with "
    "--cpu-smoke."
)


def astronaut_frame() -> AvatarFrame:
    image = cv2.imread(str(ASTRONAUT), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cannot read {ASTRONAUT}")
    image = image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2]  # I420: even sizes
    mouth = MouthGeometry(center_x=249, center_y=260, half_width=30, lip_height=10, chin_y=300)
    return AvatarFrame(image=image, box=ASTRONAUT_BOX, mouth=mouth)


def speech(frame: AvatarFrame, count: int, seed: int = 0) -> list[LipSyncRequest]:
    rng = np.random.default_rng(seed)
    return [
        LipSyncRequest(
            mel=rng.uniform(-4, 4, (80, 16)).astype(np.float32), frame=frame, silent=False
        )
        for _ in range(count)
    ]


def host_i420(engine: Wav2LipEngine, requests: Sequence[LipSyncRequest]) -> list[np.ndarray]:
    """Today's path: face patches, the compositor, OpenCV's BGR -> I420."""
    patches = engine.infer(requests)
    return [
        np.asarray(cv2.cvtColor(composite(r.frame, p), cv2.COLOR_BGR2YUV_I420))
        for r, p in zip(requests, patches, strict=True)
    ]


def plane_diffs(want: list[np.ndarray], got: list[np.ndarray]) -> dict[str, tuple[int, float]]:
    """(max, mean) abs difference per plane over all frames, in grey levels."""
    height, width = want[0].shape[0] * 2 // 3, want[0].shape[1]
    luma, chroma = height * width, height * width // 4
    diffs = [np.abs(w.astype(np.int16) - g).reshape(-1) for w, g in zip(want, got, strict=True)]
    bounds = {"Y": (0, luma), "U": (luma, luma + chroma), "V": (luma + chroma, None)}
    out: dict[str, tuple[int, float]] = {}
    for name, (start, stop) in bounds.items():
        values = np.concatenate([d[start:stop] for d in diffs])
        out[name] = (int(values.max()), float(values.mean()))
    return out


def cuda_tests() -> str:
    """``tests/test_wav2lip_cuda.py`` in a subprocess, its output printed; its summary line."""
    done = subprocess.run(
        [sys.executable, "-m", *PYTEST, CUDA_TESTS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    print(done.stdout[-6000:], done.stderr[-2000:], sep="\n", flush=True)
    lines = [line.strip("= ") for line in done.stdout.splitlines() if line.strip()]
    return lines[-1] if lines else f"no output (exit {done.returncode})"


def agreement(model: Wav2Lip, candidate: Backend, frame: AvatarFrame, batch: int) -> list[str]:
    """Step 1 as table rows: the backend against fp32, then the device path's I420 against
    the host path's, with the CPU fp32 model (everything that differs) and with the same
    backend (the paste and conversion kernels alone)."""
    reference = create_backend("torch", model)
    mel, face = synthetic_batches(1, batch, seed=21)[0]
    diff = np.abs(candidate.run(mel, face) - reference.run(mel, face))
    rows = [
        f"| `{candidate.name}` backend vs `torch` fp32 on CPU (output in [0, 1]) "
        f"| {diff.max():.4f} | {diff.mean():.5f} |"
    ]
    requests = speech(frame, batch, seed=5)
    device = Wav2LipEngine(candidate, max_batch=batch, device_path=True).infer_i420(requests)
    for label, backend in (("fp32 CPU", reference), (f"same `{candidate.name}`", candidate)):
        host = Wav2LipEngine(backend, max_batch=batch, device_path=False)
        for plane, (most, mean) in plane_diffs(host_i420(host, requests), device).items():
            rows.append(
                f"| device path ({candidate.device}) vs host path ({label} backend), "
                f"{plane} plane, grey levels | {most} | {mean:.4f} |"
            )
    return rows


def per_second(run: Callable[[], object], batch: int, seconds: float, min_iters: int) -> float:
    """Frames per second of ``run`` (one batch a call, synchronous), warm."""
    run()
    iters = 0
    start = time.perf_counter()
    while iters < min_iters or time.perf_counter() - start < seconds:
        run()
        iters += 1
    return iters * batch / (time.perf_counter() - start)


class Overlapped:
    """Batches as the live batcher runs them: each call queues the next batch, then collects
    the one before (so the device computes one while the host finishes the other)."""

    def __init__(self, engine: Wav2LipEngine, requests: Sequence[LipSyncRequest]) -> None:
        self._engine, self._requests = engine, requests
        self._pending: PendingFrames | None = None

    def step(self) -> None:
        queued = self._engine.submit_i420(self._requests)
        if self._pending is not None:
            self._pending.result()
        self._pending = queued

    def drain(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None


def whole_batch(
    backend: Backend, frame: AvatarFrame, batches: Sequence[int], seconds: float, min_iters: int
) -> dict[str, dict[int, float]]:
    """Step 3: frames per second of the device path and of the host path, per batch."""
    results: dict[str, dict[int, float]] = {
        "device path": {},
        "device path, next batch queued before collecting (the batcher's way)": {},
        "host path (today)": {},
    }
    for b in batches:
        requests = speech(frame, b, seed=b)
        device = Wav2LipEngine(backend, max_batch=b, device_path=True)
        host = Wav2LipEngine(backend, max_batch=b, device_path=False)
        results["device path"][b] = per_second(
            partial(device.infer_i420, requests), b, seconds, min_iters
        )
        overlapped = Overlapped(device, requests)
        results["device path, next batch queued before collecting (the batcher's way)"][b] = (
            per_second(overlapped.step, b, seconds, min_iters)
        )
        overlapped.drain()
        results["host path (today)"][b] = per_second(
            partial(host_i420, host, requests), b, seconds, min_iters
        )
        print(
            f"whole batch b={b:<3d} device {results['device path'][b]:8.1f} fps, "
            f"host {results['host path (today)'][b]:8.1f} fps",
            flush=True,
        )
    return results


def machine(device: str) -> str:
    cpu = f"nproc {os.cpu_count()}, {cpu_model()}"
    versions = (
        f"torch {torch.__version__}, OpenCV {cv2.__version__}, Python {platform.python_version()}"
    )
    if not device.startswith("cuda"):
        return f"{cpu}, no GPU used; {versions}"
    props = torch.cuda.get_device_properties(device)
    gpu = f"{torch.cuda.get_device_name(device)} ({props.total_memory / 2**30:.0f} GiB)"
    cudnn = torch.backends.cudnn.version()
    return f"{gpu}, CUDA {torch.version.cuda}, cuDNN {cudnn}; {cpu}; {versions}"


def report(command: str, elapsed: float, device: str, sections: list[str], smoke: bool) -> str:
    note = " **CPU smoke run: tiny, not a benchmark.**" if smoke else ""
    live = "" if any(s.startswith(LIVE_HEADING) for s in sections) else NO_LIVE + "\n"
    return (
        f"{SECTION}\n\n"
        "The Wav2Lip engine on a GPU, random weights (real speed, meaningless mouths): "
        f"agreement with fp32, the generator alone, the whole batch, live sessions.{note}\n\n"
        f"- command: `{command}` ({elapsed:.0f} s)\n"
        f"- machine: {machine(device)}\n"
        f"- date: {time.strftime('%Y-%m-%d')}\n\n" + "\n\n".join(sections) + "\n\n" + live
    )


def fps_table(results: dict[str, dict[int, float]], batches: Sequence[int], label: str) -> str:
    head = f"| {label} | " + " | ".join(f"b={b}" for b in batches) + " | best |"
    rows = [head, "|---|" + "---:|" * (len(batches) + 1)]
    for name, per_batch in results.items():
        cells = [f"{per_batch[b]:.0f}" if b in per_batch else "-" for b in batches]
        best = max(per_batch, key=lambda b: per_batch[b]) if per_batch else None
        tail = f"{per_batch[best]:.0f} (b={best})" if best is not None else "-"
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {tail} |")
    return "\n".join(rows)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="steps 1 and 3, tiny, on CPU")
    parser.add_argument("--write", action="store_true", help="replace the section in docs")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (rehearsal)")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--seconds", type=float, default=0.5, help="timed seconds per cell")
    parser.add_argument("--min-iters", type=int, default=3)
    parser.add_argument("--skip-generator", action="store_true", help="leave out step 2")
    parser.add_argument("--skip-tests", action="store_true", help=f"do not run {CUDA_TESTS}")
    add_live_options(parser)
    args = parser.parse_args(argv)
    if args.device == "cpu":  # the rehearsal: steps 1 and 3 tiny, step 4 on the CPU
        args.cpu_smoke = True
    elif args.cpu_smoke:
        args.live = False  # --cpu-smoke alone: steps 1 and 3, without the server's stack
    if args.quick and not args.cpu_smoke:
        args.batches, args.seconds = "1,8", 0.2
    if args.cpu_smoke and args.write:
        parser.error("CPU runs (--cpu-smoke, --device cpu) are no benchmark: not writing docs")
    return args


def main(argv: Sequence[str] | None = None) -> str:
    """Run the steps and return the markdown section (also printed)."""
    args = parse(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        raise SystemExit(NO_CUDA.format(version=torch.__version__, cuda=torch.version.cuda))
    device = "cpu" if args.cpu_smoke else args.device
    batches = [1, 2] if args.cpu_smoke else [int(b) for b in args.batches.split(",")]
    seconds, min_iters = (0.0, 1) if args.cpu_smoke else (args.seconds, args.min_iters)
    began = time.perf_counter()
    sections: list[str] = []
    if not args.skip_tests:
        sections.append(f"### CUDA tests\n\n`{CUDA_TESTS}`: {cuda_tests()}")
    frame = astronaut_frame()
    with tempfile.TemporaryDirectory() as folder:
        model = random_checkpoint(Path(folder), batches=1 if args.cpu_smoke else 2)
    if args.live_only:
        return finish(args, argv, began, [*sections, live_step(args, model)])
    name = "torch" if args.cpu_smoke else "cuda"
    backend = create_backend(name, model, device, max_batch=max(batches))
    rows = agreement(model, backend, frame, batch=2 if args.cpu_smoke else 16)
    sections.append(
        "### 1. Agreement with fp32\n\n| check | max | mean |\n|---|---:|---:|\n" + "\n".join(rows)
    )
    print("\n".join(rows), flush=True)
    if not args.cpu_smoke and not args.skip_generator:
        generator = measure_generator(model, device, batches, seconds, min_iters)
        sections.append(
            "### 2. Generator alone, frames per second\n\n"
            + fps_table(generator, batches, "variant")
        )
    whole = whole_batch(backend, frame, batches, seconds, min_iters)
    sections.append(
        "### 3. Whole batch, frames per second (from requests to I420 planes on the host)\n\n"
        + fps_table(whole, batches, "path")
    )
    if args.live:
        sections.append(live_step(args, model))
    return finish(args, argv, began, sections)


def finish(
    args: argparse.Namespace, argv: Sequence[str] | None, began: float, sections: list[str]
) -> str:
    """Print the section and, with --write, put it into docs/benchmarks.md."""
    device = "cpu" if args.cpu_smoke else args.device
    given = sys.argv[1:] if argv is None else argv
    command = "python bench/gpu.py" + "".join(f" {shlex.quote(a)}" for a in given)
    body = report(command, time.perf_counter() - began, device, sections, args.cpu_smoke)
    print()
    print(body)
    if args.write:
        write_section(SECTION, body)
        print(f"updated {DOCS}")
    return body


if __name__ == "__main__":
    main()
