"""What bench/gpu_live.py reads off the server while a level speaks: GPU utilisation (NVML)
and the CPU of the server's threads by role (/proc), which shows whether one thread (the
event loop, the batcher) is what stops the count before the GPU or the cores do."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

SAMPLE_EVERY = 0.1
ROLES = ("loop", "batcher", "encode", "other")
"""The server's threads by name: the main thread runs the event loop (aiohttp, aiortc, the
tracks); ``batcher-*`` is the engine's one worker (rtc/live/batcher.py); ``encode_*`` the
encode pool (rtc/webrtc/fanout.py); the rest are torch's, the default executor's (TTS) ..."""

Threads = dict[int, tuple[str, float]]
"""Thread id -> (role, CPU seconds so far)."""


def thread_seconds(pid: int) -> Threads:
    """CPU seconds (user + system) so far of each of process ``pid``'s threads, with its role."""
    tick = os.sysconf("SC_CLK_TCK")
    out: Threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended while we looked
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 1 :].split()
        role = "loop" if task.name == str(pid) else "other"
        role = next((r for r in ("batcher", "encode") if name.startswith(r)), role)
        out[int(task.name)] = (role, (int(fields[11]) + int(fields[12])) / tick)
    return out


def thread_load(before: Threads, after: Threads, seconds: float) -> dict[str, float]:
    """% of one core per role between two readings ``seconds`` apart: the loop's thread; the
    busiest ``batcher`` thread (threads inherit their creator's name, so torch's and CUDA's
    helpers started from the batcher carry it too: its own share is the one that can hit
    100 %); the sum over the encode pool and over the rest."""
    load = dict.fromkeys(ROLES, 0.0)
    for tid, (role, used) in after.items():
        share = 100 * max(0.0, used - before.get(tid, (role, 0.0))[1]) / seconds
        load[role] = max(load[role], share) if role == "batcher" else load[role] + share
    return load


class GpuSampler:
    """GPU utilisation (NVML: share of time a kernel ran) sampled in a thread until stopped."""

    def __init__(self, device: str, seconds: float) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._handle: Any = None
        self._seconds = seconds
        if device.startswith("cuda"):
            try:
                import pynvml

                pynvml.nvmlInit()
                index = int(device.partition(":")[2] or 0)
                self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            except Exception:  # no nvidia-ml-py or no driver: the table says n/a
                self._handle = None
        self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)

    def _run(self) -> None:
        import pynvml

        deadline = time.monotonic() + self._seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.samples.append(float(pynvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))
            self._stop.wait(SAMPLE_EVERY)

    def start(self) -> None:
        if self._handle is not None:
            self._thread.start()

    def stop(self) -> tuple[float, float] | None:
        """(mean, max) utilisation in %, or None without NVML."""
        self._stop.set()
        if self._handle is None:
            return None
        self._thread.join(5)
        if not self.samples:
            return None
        return sum(self.samples) / len(self.samples), max(self.samples)
