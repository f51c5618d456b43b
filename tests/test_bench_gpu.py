"""bench/gpu.py runs end to end on CPU (--cpu-smoke) without what the GPU machine lacks, and
says clearly when there is no GPU; the GPU numbers themselves come from the GPU machine."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import bench.report
from bench import gpu, gpu_live, gpu_live_clients, gpu_live_probes, gpu_live_report
from config import PROJECT_ROOT

ABSENT_ON_THE_GPU_MACHINE = ("av", "aiortc", "librosa", "espeakng_loader", "aioice", "openvino")

# Runs bench/gpu.py as a script with those packages made unimportable.
BLOCKED_RUN = """
import importlib.abc, runpy, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError("no module named " + name + " on the GPU machine")
sys.meta_path.insert(0, Absent())
sys.argv = ["bench/gpu.py", "--cpu-smoke"]
runpy.run_path("bench/gpu.py", run_name="__main__")
"""


def test_cpu_smoke_runs_without_what_the_gpu_machine_lacks() -> None:
    code = BLOCKED_RUN.format(blocked=set(ABSENT_ON_THE_GPU_MACHINE))
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert gpu.SECTION in out and "CPU smoke run" in out and "aiortc" in out
    assert "### 1. Agreement" in out and "### 3. Whole batch" in out
    # The CUDA tests ran in their own pytest, skipped here (no GPU), and said so.
    assert re.search(r"`tests/test_wav2lip_cuda.py`: \d+ skipped", out), out[-3000:]
    assert "### 2." not in out  # the generator variants need CUDA
    planes = re.findall(r"\| device path \(cpu\) vs host path .*?, (\w) plane.*?\| (\d+) \|", out)
    assert {p for p, _ in planes} == {"Y", "U", "V"}
    assert all(int(most) <= 1 for _, most in planes), planes
    assert re.search(r"\| device path \| \d+ \| \d+ \|", out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_cuda_it_says_what_to_do() -> None:
    with pytest.raises(SystemExit) as stopped:
        gpu.main([])
    message = str(stopped.value.code)
    assert "needs a CUDA GPU" in message and "--cpu-smoke" in message


def test_smoke_numbers_are_not_written() -> None:
    with pytest.raises(SystemExit) as stopped:
        gpu.parse(["--cpu-smoke", "--write"])
    assert stopped.value.code == 2


def test_the_report_replaces_only_its_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## GPU (bench/gpu.py)\n\nold\n\n## Other (x)\n\nkept\n")
    monkeypatch.setattr(bench.report, "DOCS", docs)
    body = gpu.report("python bench/gpu.py", 1.0, "cpu", ["### 1. Agreement\n\nrows"], False)
    bench.report.write_section(gpu.SECTION, body)
    text = docs.read_text()
    assert "old" not in text and "### 1. Agreement" in text and "kept" in text
    assert text.index(gpu.SECTION) < text.index("## Other (x)")
    assert "machine: nproc" in text


# --- step 4: live sessions (bench/gpu_live.py); the rehearsal itself is too long for CI ----


def level(sessions: int, fps: float, **fields: object) -> gpu_live_report.Level:
    made = gpu_live_report.Level(sessions, fps=[fps] * sessions, seconds=10.0)
    for name, value in fields.items():
        setattr(made, name, value)
    return made


def test_median_averages_the_middle_two_and_skips_nan() -> None:
    median = gpu_live_report.median
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert median([1.0, math.nan, 5.0]) == 3.0
    assert math.isnan(median([])) and math.isnan(median([math.nan]))
    assert gpu_live_report.percentile([0.0, 10.0, 20.0], 95) == pytest.approx(19.0)
    assert gpu_live_report.percentile([7.0], 95) == 7.0


def test_the_ramp_stops_at_the_first_level_not_sustained() -> None:
    stop = gpu_live_report.stop_reason
    ok, slow = level(8, 25.0), level(16, 23.5)
    assert stop([ok], [16, 32], 10.0, 300.0, True) is None
    reason = stop([ok, slow], [32], 20.0, 300.0, True)
    assert reason is not None and "16 sessions not sustained" in reason and "23.5" in reason
    # a session that never reported, or a failed client process, is not sustained either
    short = gpu_live_report.Level(4, fps=[25.0] * 3)
    assert "only 3 reported" in (gpu_live_report.verdict(short) or "")
    broken = level(4, 25.0, errors=["TimeoutError: no go signal"])
    assert "TimeoutError" in (stop([broken], [8], 1.0, 300.0, True) or "")
    # --quick runs every level and says which were not sustained at the end
    assert stop([slow], [32], 20.0, 300.0, False) is None
    assert "not sustained at 16" in (stop([slow, level(32, 24.0)], [], 30.0, 300.0, False) or "")
    assert "every level sustained" in (stop([ok], [], 10.0, 300.0, True) or "")
    # the next level would not fit: guessed at twice the last one
    assert "time budget" in (stop([ok], [16], 285.0, 300.0, True) or "")


def test_the_table_has_a_cell_per_column_and_says_what_is_missing() -> None:
    measured = level(
        32,
        24.5,
        server_ms=[90.0, 110.0],
        e2e_ms=[130.0, math.nan],
        lag_ms=[10.0, -30.0],
        corr=[0.1, 0.2],
        gpu_util=(61.0, 88.0),
        cpu_per_session=3.25,
        threads={"loop": 71.0, "batcher": 40.4, "encode": 120.0, "other": 5.0},
        connect_s=4.0,
    )
    empty = gpu_live_report.Level(64, errors=["a client process ended"])
    lines = gpu_live_report.table([measured, empty]).splitlines()
    assert len({line.count("|") for line in lines}) == 1
    assert (
        "| 32 | 24.5 / 24.5 | 100 / 109 | 130 / 130 | -10 / 30 (corr 0.15) | 61 / 88 " in lines[2]
    )
    assert lines[2].endswith("| 3.2 | 71 / 40 / 120 | 4.0 | yes |")
    assert lines[3] == "| 64 | - | - | - | - | n/a | - | - | - | **no** |"
    summary = gpu_live_report.targets([measured, empty])
    assert "Sessions sustained: 32" in summary and "missed" in summary
    assert "100 ms, met" in summary


def test_arguments_of_step_4() -> None:
    rehearsal = gpu.parse(["--device", "cpu", "--quick"])
    assert rehearsal.cpu_smoke and rehearsal.live
    options = gpu_live.live_options(rehearsal)
    assert options.device == "cpu" and options.levels == gpu_live.QUICK_LEVELS
    assert options.per_process == 1 and not options.stop_early
    assert gpu_live.server_flags(options, Path("w"))[:6] == [
        "--engine", "wav2lip-gan", "--device", "cpu", "--backend", "torch",
    ]  # fmt: skip
    assert not gpu.parse(["--cpu-smoke"]).live  # steps 1 and 3 without the server's stack
    assert not gpu.parse(["--no-live"]).live and gpu.parse(["--live-only"]).live_only
    full = gpu_live.live_options(gpu.parse(["--live-levels", "4,12", "--live-per-process", "3"]))
    assert full.levels == (4, 12) and full.per_process == 3 and full.stop_early
    assert full.device == "cuda" and "auto" in gpu_live.server_flags(full, Path("w"))
    assert gpu.parse(["--quick"]).batches == "1,8"


def test_the_cpu_rehearsal_refuses_to_write_docs() -> None:
    with pytest.raises(SystemExit) as stopped:
        gpu.parse(["--device", "cpu", "--quick", "--write"])
    assert stopped.value.code == 2


def test_the_report_says_whether_step_4_ran() -> None:
    without = gpu.report("python bench/gpu.py --no-live", 1.0, "cpu", ["### 1. x"], True)
    assert gpu_live.NO_LIVE in without
    live = gpu_live.section([level(8, 25.0)], "every level sustained", gpu_live.LiveOptions("cuda"))
    assert live.startswith(gpu_live_report.LIVE_HEADING)
    assert gpu_live.NO_LIVE not in gpu.report("python bench/gpu.py", 1.0, "cpu", [live], False)


def test_the_device_call_is_one_line_in_the_docstring() -> None:
    command = gpu_live.DEVICE_COMMAND
    assert "\n" not in command and len(command) <= 2000
    assert command in (gpu.__doc__ or "")
    assert "--write" in command and "$OUT" in command and ".whl/wheels.tar.xz" in command


def test_the_wheel_list_pins_one_version_of_each() -> None:
    lines = (PROJECT_ROOT / "bench" / "gpu_wheels.txt").read_text().splitlines()
    pins = [line for line in lines if line and not line.startswith("#")]
    names = [pin.split("==")[0].lower().replace("_", "-") for pin in pins]
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.]*", p) for p in pins), pins
    assert len(set(names)) == len(names)
    assert {"aiortc", "av", "librosa", "espeakng-loader", "pydantic"} <= set(names)
    assert "/.whl/" in (PROJECT_ROOT / ".gitignore").read_text().splitlines()


def test_first_changed_frame() -> None:
    idle = np.zeros((4, 4), np.uint8)
    moved = np.full((4, 4), 9, np.uint8)
    times = [1.0, 2.0, 3.0, 4.0]
    mouths = [idle, moved, idle, moved]
    assert gpu_live_clients.first_changed(times, mouths, 2, idle.astype(np.float32)) == 4.0
    assert gpu_live_clients.first_changed(times, mouths[:3], 2, idle.astype(np.float32)) is None


def test_thread_seconds_by_role() -> None:
    threads = gpu_live_probes.thread_seconds(os.getpid())
    assert threads[os.getpid()][0] == "loop" and threads[os.getpid()][1] > 0
    before = {1: ("loop", 1.0), 2: ("batcher", 0.5), 3: ("batcher", 0.0), 4: ("encode", 0.0)}
    after = {1: ("loop", 2.0), 2: ("batcher", 1.0), 3: ("batcher", 0.8), 4: ("encode", 0.4)}
    after |= {5: ("encode", 0.6), 6: ("other", 0.1)}  # a thread started in between counts whole
    load = gpu_live_probes.thread_load(before, after, 2.0)
    assert load == pytest.approx({"loop": 50.0, "batcher": 40.0, "encode": 50.0, "other": 5.0})
    assert gpu_live_probes.GpuSampler("cpu", 1.0).stop() is None  # n/a without a GPU


def test_a_level_whose_clients_cannot_connect_says_why(tmp_path: Path) -> None:
    from tests.server_process import free_port

    options = gpu_live.LiveOptions("cpu", per_process=1, timeout_s=5.0)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    procs = gpu_live.spawn(url, "0,0,8,8", 2, tmp_path, options)
    why = gpu_live.wait_ready(procs, 60.0)
    level = gpu_live_report.Level(2)
    gpu_live.collect(procs, level, 60.0)
    assert why is not None and "ended before" in why
    assert len(level.errors) == 2 and all("Connect" in e for e in level.errors), level.errors
    assert "Connect" in (gpu_live_report.verdict(level) or "")
