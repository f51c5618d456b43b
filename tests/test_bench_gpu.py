"""bench/gpu.py runs end to end on CPU (--cpu-smoke) without what the GPU machine lacks, and
says clearly when there is no GPU; the GPU numbers themselves come from the GPU machine."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bench.report
from bench import gpu
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
