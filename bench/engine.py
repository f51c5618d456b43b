"""Wav2Lip generator speed per backend and batch size (random weights: speed only).

    python bench/engine.py                       # every backend that runs here, batches 1..32
    python bench/engine.py --backends torch,openvino-bf16 --batches 1,8 --seconds 1 --no-docs

Prints a markdown table of frames per second and replaces the section
"## Wav2Lip engine (bench/engine.py)" of docs/benchmarks.md (unless --no-docs).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # allow `python bench/engine.py` from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.report import DOCS, cpu_model, write_section  # noqa: E402
from inference.engines.wav2lip_backends import (  # noqa: E402
    CPU_BACKENDS,
    Backend,
    OpenVinoBackend,
    backend_status,
    cpu_has_native_bf16,
    create_backend,
)
from inference.engines.wav2lip_model import Wav2Lip  # noqa: E402

SECTION = "## Wav2Lip engine (bench/engine.py)"


def build(name: str, model: Wav2Lip, ov_cache: dict[str, object]) -> Backend:
    """Backends sharing one OpenVINO conversion (it traces the model: seconds)."""
    if name.startswith("openvino"):
        from inference.engines import wav2lip_calibrate as cal

        if "model" not in ov_cache:
            ov_cache["model"] = cal.convert(model)
        precision = {"openvino": "f32", "openvino-bf16": "bf16", "openvino-int8": "int8"}[name]
        ranges = None
        if precision == "int8":  # speed does not depend on the ranges: calibrate small
            ranges = cal.collect_ranges(ov_cache["model"], cal.synthetic_batches(1, 4))
        return OpenVinoBackend(ov_cache["model"], precision, ranges)
    device = "cuda" if name == "cuda" else "cpu"
    return create_backend(name, model, device, max_batch=64)


def measure(backend: Backend, batch: int, seconds: float, min_iters: int) -> float:
    rng = np.random.default_rng(batch)
    mel = rng.uniform(-4, 4, (batch, 1, 80, 16)).astype(np.float32)
    face = rng.random((batch, 6, 96, 96), dtype=np.float32)
    backend.run(mel, face)  # first call pays for kernel selection
    iters = 0
    start = time.perf_counter()
    while iters < min_iters or time.perf_counter() - start < seconds:
        backend.run(mel, face)
        iters += 1
    return iters * batch / (time.perf_counter() - start)


def table(results: dict[str, dict[int, float]], batches: list[int]) -> str:
    head = "| backend | " + " | ".join(f"b={b}" for b in batches) + " | best |"
    rule = "|---|" + "---:|" * (len(batches) + 1)
    rows = [head, rule]
    for name, per_batch in results.items():
        cells = [f"{per_batch[b]:.1f}" if b in per_batch else "-" for b in batches]
        best = max(per_batch, key=lambda b: per_batch[b]) if per_batch else None
        best_cell = f"{per_batch[best]:.1f} (b={best})" if best is not None else "-"
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {best_cell} |")
    return "\n".join(rows)


def machine() -> str:
    import importlib.util

    ov = "not installed"
    if importlib.util.find_spec("openvino") is not None:
        import openvino

        ov = openvino.get_version().split("-")[0]
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"nproc {os.cpu_count()}, {cpu_model()}, native bf16: "
        f"{'yes' if cpu_has_native_bf16() else 'no'}, GPU: {gpu}; "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), OpenVINO {ov}, "
        f"Python {platform.python_version()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = [b for b in (*CPU_BACKENDS, "cuda") if backend_status(b) is None]
    parser.add_argument("--backends", default=",".join(default))
    parser.add_argument("--batches", default="1,4,8,16,32")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per cell")
    parser.add_argument("--min-iters", type=int, default=2)
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args()
    names = [n for n in args.backends.split(",") if n]
    batches = [int(b) for b in args.batches.split(",")]

    torch.manual_seed(0)
    model = Wav2Lip().eval()
    results: dict[str, dict[int, float]] = {}
    ov_cache: dict[str, object] = {}
    began = time.perf_counter()
    for name in names:
        status = backend_status(name)
        if status is not None:
            print(f"skipping {name}: {status}")
            continue
        backend = build(name, model, ov_cache)
        results[name] = {}
        for b in batches:
            results[name][b] = measure(backend, b, args.seconds, args.min_iters)
            print(f"{name:14s} b={b:<3d} {results[name][b]:7.1f} fps", flush=True)
        del backend
    elapsed = time.perf_counter() - began

    command = "python bench/engine.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    md = table(results, batches)
    print()
    print(md)
    if not args.no_docs:
        body = (
            f"{SECTION}\n\n"
            "Frames per second of the 96x96 generator alone (no pre/post-processing), random "
            "weights, one backend call per batch, warm.\n\n"
            f"- command: `{command}` ({elapsed:.0f} s)\n"
            f"- machine: {machine()}\n"
            f"- date: {time.strftime('%Y-%m-%d')}\n\n"
            f"{md}\n\n"
            "int8 ranges were calibrated on synthetic inputs (speed does not depend on them). "
            "Shared, virtualised CPUs make single cells noisy (+-30% seen between runs).\n"
        )
        write_section(SECTION, body)
        print(f"\nupdated {DOCS}")


if __name__ == "__main__":
    main()
