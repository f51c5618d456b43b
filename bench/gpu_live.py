"""Step 4 of bench/gpu.py: N live Wav2Lip sessions over loopback WebRTC, until one falls behind.

The server runs in its own process (``python server.py serve --ice-loopback``, as
bench/realtime.py starts it) with the ``wav2lip-gan`` engine on the random-weight checkpoint
of steps 1-3, on the GPU (``--device cuda``: the ``cuda`` backend) or, to rehearse, on the
CPU (``--backend torch``). Clients run in other processes (bench/gpu_live_clients.py, a few
sessions each), so the server's event loop and GIL are its own. Per level every session says
the same text at the same instant; per level it reports fresh fps, text -> first frame,
mouth/audio lag, GPU utilisation (NVML) and the server's CPU per session and per thread
(bench/gpu_live_probes.py), and the ramp stops
at the first level not sustained (bench/gpu_live_report.py). Every wait has a bound, and a
level is not started when it would overrun the time budget.

Clients share the machine with the server (on the GPU machine: 16 cores), and each decodes
everything it receives, so the count is a lower bound for a server with the box to itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.gpu_live_probes import GpuSampler, thread_load, thread_seconds
from bench.gpu_live_report import LIVE_HEADING, Level, stop_reason, table, targets

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ROOT / "bench" / "gpu_live_clients.py"
LEVELS = (8, 16, 32, 64, 128, 256)
QUICK_LEVELS = (1, 2)
PER_PROCESS = 8
"""Sessions per client process: 128 sessions = 16 processes, one per core of the GPU box."""
WINDOW = (1.5, 4.5)
"""Seconds after the common 'say' over which server CPU and GPU utilisation are sampled:
past the first frames, inside the ~5 s of speech."""
START_SECONDS = 240.0
"""The server must answer /healthz within this (CUDA start and the engine's warm-up)."""

DEVICE_COMMAND = (
    "python3 -c \"import tarfile; tarfile.open('.whl/wheels.tar.xz').extractall('/tmp/whl', "
    "filter='data')\" && "
    "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade "
    "--target /tmp/site /tmp/whl/*.whl && export PYTHONPATH=/tmp/site || exit; "
    "python3 -c 'import aiortc, av, librosa, pydantic, espeakng_loader' || exit; "
    "set -o pipefail; PYTHONUNBUFFERED=1 timeout 560 python3 bench/gpu.py --write 2>&1 "
    "| tee $OUT/gpu.log; rc=$?; cp docs/benchmarks.md $OUT/; nvidia-smi >> $OUT/gpu.log; "
    "exit $rc"
)
"""The device tool's whole call for bench/gpu.py (``carry: [".whl"]``, timeout_s 600; make
.whl/ first with bench/gpu_wheels.sh): the wheels into /tmp/site, the four steps, the log and
the rewritten docs/benchmarks.md back in $OUT (the device's copy of the tree does not come
back). 560 s leaves the tool's 600 s limit time to copy the results. Python unpacks the
archive (its lzma): the image need not have xz."""


@dataclass(frozen=True)
class LiveOptions:
    """How bench/gpu.py asked for step 4."""

    device: str
    """``cuda``, ``cuda:N`` or ``cpu`` (the rehearsal: the ``torch`` backend)."""
    levels: tuple[int, ...] = LEVELS
    per_process: int = PER_PROCESS
    stop_early: bool = True
    """Stop at the first level not sustained (False: --quick runs every level)."""
    budget_s: float = 330.0
    """No level starts that would end later than this after step 4 began."""
    codec: str | None = "video/H264"
    """Video codec the clients offer first (None: aiortc's order, VP8 first). H.264, as the
    pages offer where the browser has it: libx264 ultrafast is the cheaper encode of the two,
    and at 100+ sessions the encodes share the box's 16 cores with the clients' decodes."""
    timeout_s: float = 60.0
    """Bound of each wait in a client process (connecting, speaking)."""


def write_checkpoint(model: Any, folder: Path) -> None:
    """The random generator under the name the server looks for (legacy dict)."""
    from inference.engines.wav2lip_synthetic import save_checkpoint

    save_checkpoint(model, folder / "wav2lip_gan.pth")


def server_flags(options: LiveOptions, folder: Path) -> list[str]:
    device = options.device  # cpu (the rehearsal), cuda or cuda:N
    backend = "torch" if device == "cpu" else "auto"  # auto on a GPU: the cuda backend
    sessions = max(options.levels) + 2
    engine = ["--engine", "wav2lip-gan", "--device", device, "--backend", backend]
    return [*engine, "--checkpoints", str(folder), "--max-sessions", str(sessions)]


@contextlib.contextmanager
def live_server(options: LiveOptions, folder: Path) -> Iterator[Any]:
    """The server process (tests/server_process.py starts it, loopback ICE)."""
    from tests.server_process import server_process

    prepared = ROOT / ".whl" / "avatar-cache"  # bench/gpu_wheels.sh detected the face here
    if prepared.is_dir():
        shutil.copytree(prepared, folder / "cache", dirs_exist_ok=True)
    with server_process(
        folder / "server.log",
        folder / "cache",
        None,
        *server_flags(options, folder),
        start_seconds=START_SECONDS,
    ) as server:
        yield server


def spawn(url: str, box: str, count: int, folder: Path, options: LiveOptions) -> list[Any]:
    """Start the client processes of one level: (process, ready file, out file) each."""
    procs = []
    for k, first in enumerate(range(0, count, options.per_process)):
        n = min(options.per_process, count - first)
        ready, out = folder / f"ready-{k}", folder / f"out-{k}.json"
        cmd = [sys.executable, str(CLIENTS), url, str(n), box, str(ready), str(folder / "go")]
        cmd += [str(out), "--timeout", str(options.timeout_s)]
        cmd += ["--codec", options.codec] if options.codec else []
        procs.append((subprocess.Popen(cmd), ready, out))
    return procs


def wait_ready(procs: list[Any], timeout: float) -> str | None:
    """Wait until every process has video in all its sessions; why not, or None."""
    deadline = time.monotonic() + timeout
    while not all(ready.exists() for _, ready, _ in procs):
        if any(p.poll() is not None and not ready.exists() for p, ready, _ in procs):
            return "a client process ended before its sessions had video"
        if time.monotonic() > deadline:
            return f"the sessions did not all show video within {timeout:.0f} s"
        time.sleep(0.05)
    return None


def collect(procs: list[Any], level: Level, timeout: float) -> None:
    """Wait for the processes (killing what overruns ``timeout``) and read their results."""
    deadline = time.monotonic() + timeout
    for proc, ready, out in procs:
        try:
            proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            level.errors.append(f"a client process ran past {timeout:.0f} s")
        result: dict[str, Any] = {"error": "a client process wrote no results"}
        with contextlib.suppress(OSError, ValueError):  # killed before or while writing them
            result = json.loads(out.read_text())
        if "error" in result:
            level.errors.append(result["error"])
            continue
        for s in result["sessions"]:
            level.fps.append(s["fps"])
            level.server_ms.append(s["server_ms"])
            level.e2e_ms.append(s["e2e_ms"])
            level.lag_ms.append(s["lag"] * 1000)
            level.corr.append(s["corr"])
        if ready.exists():  # the slowest process's connect time is the level's
            took = float(ready.read_text())
            level.connect_s = took if math.isnan(level.connect_s) else max(level.connect_s, took)


def run_level(server: Any, box: str, count: int, options: LiveOptions) -> Level:
    """``count`` sessions speak at once; the level's figures."""
    from bench.fanout import server_stat

    level = Level(count)
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        procs = spawn(server.base, box, count, folder, options)
        why = wait_ready(procs, options.timeout_s + 30)
        start_at = time.monotonic() + 0.5
        if why is None:  # written whole, then renamed: a client never reads half of it
            (folder / "go.part").write_text(f"{start_at:.6f}")
            (folder / "go.part").rename(folder / "go")
            time.sleep(max(0.0, start_at + WINDOW[0] - time.monotonic()))
            pid = server.process.pid
            cpu0, threads0 = server_stat(pid)[0], thread_seconds(pid)
            sampler = GpuSampler(options.device, WINDOW[1] - WINDOW[0] + 1)
            sampler.start()
            t0 = time.monotonic()
            time.sleep(WINDOW[1] - WINDOW[0])
            cpu1, threads1 = server_stat(pid)[0], thread_seconds(pid)
            level.gpu_util = sampler.stop()
            took = time.monotonic() - t0
            level.cpu_per_session = 100 * (cpu1 - cpu0) / took / count
            level.threads = thread_load(threads0, threads1, took)
        else:
            for proc, _, _ in procs:  # the level is lost: no point in speaking
                proc.terminate()
        collect(procs, level, 2 * options.timeout_s + 30)
        if why is not None:  # after what the processes said: their own errors come first
            level.errors.append(why)
    level.seconds = time.monotonic() - began
    return level


def mouth_box(url: str, cache: Path) -> str:
    """The astronaut's face box (the clients watch it change), as x1,y1,x2,y2; ``cache``:
    the server's avatar cache (its prepared entry is used, not detected again)."""
    from bench.realtime import mouth_box as find

    box = asyncio.run(find(url, cache))
    return f"{box.x1},{box.y1},{box.x2},{box.y2}"


def ramp(server: Any, options: LiveOptions, cache: Path) -> tuple[list[Level], str]:
    """The levels in turn until one is not sustained, the budget is spent or none is left."""
    box = mouth_box(server.base, cache)
    began = time.monotonic()
    done: list[Level] = []
    reason = "no level ran"
    for i, count in enumerate(options.levels):
        if not server.alive():
            print("server log:", server.log()[-3000:], sep="\n")
            reason = "the server process died (the end of its log is in the output)"
            break
        done.append(run_level(server, box, count, options))
        print(table(done).splitlines()[-1], flush=True)
        if done[-1].errors:  # the device run's log is all a later session sees of it
            print("errors:", *done[-1].errors, "server log:", server.log()[-3000:], sep="\n")
        left = options.levels[i + 1 :]
        elapsed = time.monotonic() - began
        why = stop_reason(done, left, elapsed, options.budget_s, options.stop_early)
        if why is not None:
            reason = why
            break
    return done, reason


def run_live(model: Any, options: LiveOptions) -> str:
    """Step 4 as a markdown section (also printed as it goes)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_checkpoint(model, folder)
        with live_server(options, folder) as server:
            levels, reason = ramp(server, options, folder / "cache")
    return section(levels, reason, options)


def section(levels: Sequence[Level], reason: str, options: LiveOptions) -> str:
    backend = "the `torch` backend on the CPU: a rehearsal" if options.device == "cpu" else "`cuda`"
    return (
        f"{LIVE_HEADING}\n\n"
        f"`server.py serve --engine wav2lip-gan` ({backend}) in its own process; aiortc "
        f"clients in other processes ({options.per_process} per process, each decoding all it "
        "receives, on the same machine: a lower bound); every session of a level says the "
        "same Russian text at the same instant. Sustained: every session >= 24 fresh fps "
        "(bench/realtime.py's rule). Text -> first frame: server = `say` until its first "
        "lip-synced frame is released, end to end = POST until that frame arrives. Lag and "
        "its correlation mean little with random weights (the mouth does not follow the "
        f"voice). GPU utilisation (NVML) and server CPU are sampled {WINDOW[0]:g}-"
        f"{WINDOW[1]:g} s after the `say`.\n\n"
        f"{table(levels)}\n\n{targets(levels)} Stopped: {reason}."
    )


NO_LIVE = (
    "Step 4 (N live sessions over WebRTC, bench/gpu_live.py) did not run (--no-live or "
    "--cpu-smoke): it needs the server's whole stack (aiortc, av, librosa, espeakng-loader), "
    "which the GPU machine gets as wheels from bench/gpu_wheels.sh."
)


def add_live_options(parser: argparse.ArgumentParser) -> None:
    """bench/gpu.py's flags for step 4."""
    live = parser.add_argument_group("step 4, live sessions")
    live.add_argument("--live", action=argparse.BooleanOptionalAction, default=True,
                      help="run step 4 (default; --cpu-smoke alone leaves it out)")  # fmt: skip
    live.add_argument("--live-only", action="store_true", help="step 4 alone")
    live.add_argument("--quick", action="store_true",
                      help=f"tiny: levels {QUICK_LEVELS}, each run, 1 session a process; "
                      "steps 2-3 at b=1,8")  # fmt: skip
    live.add_argument("--live-levels", default=None, metavar="N,N,...",
                      help=f"session counts (default {','.join(map(str, LEVELS))})")  # fmt: skip
    live.add_argument("--live-per-process", type=int, default=PER_PROCESS,
                      help="sessions per client process")  # fmt: skip
    live.add_argument("--live-budget", type=float, default=LiveOptions.budget_s,
                      metavar="SECONDS", help="no level starts that would end later")  # fmt: skip
    live.add_argument("--live-codec", default=LiveOptions.codec,
                      help="codec clients offer first ('': aiortc's, VP8)")  # fmt: skip


def live_options(args: argparse.Namespace) -> LiveOptions:
    """Step 4's options from bench/gpu.py's arguments."""
    if args.live_levels:
        levels = tuple(int(n) for n in args.live_levels.split(","))
    else:
        levels = QUICK_LEVELS if args.quick else LEVELS
    return LiveOptions(
        device="cpu" if args.cpu_smoke else args.device,
        levels=levels,
        per_process=1 if args.quick else args.live_per_process,
        stop_early=not args.quick,
        budget_s=args.live_budget,
        codec=args.live_codec or None,
    )


def live_step(args: argparse.Namespace, model: Any) -> str:
    """Step 4 for bench/gpu.py: its markdown section."""
    options = live_options(args)
    print(f"step 4: live sessions {options.levels} on {options.device}", flush=True)
    return run_live(model, options)
