"""The process's own gauges: asyncio tasks and threads (Python's by name group, and every
OS thread, FFmpeg's and BLAS's native workers included)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric


def runtime_metrics() -> Iterator[Metric]:
    """Asyncio tasks and threads of the process: both must return to their level after
    sessions end (bench/soak.py's connect/disconnect storm reads them)."""
    try:
        tasks = len(asyncio.all_tasks())
    except RuntimeError:  # scraped outside the event loop (a test calling collect())
        tasks = 0
    yield GaugeMetricFamily(
        "avatar_asyncio_tasks", "Asyncio tasks of the server's loop", value=tasks
    )
    threads = GaugeMetricFamily(
        "avatar_threads",
        "Threads by name group (asyncio and render are bounded pools; batcher: one per engine)",
        labels=["group"],
    )
    groups = Tally(thread_group(t.name) for t in threading.enumerate())
    for group, count in sorted(groups.items()):
        threads.add_metric([group], count)
    yield threads
    # Threads Python does not know of: FFmpeg's filter-graph and codec workers, BLAS pools.
    yield GaugeMetricFamily(
        "avatar_os_threads",
        "Every OS thread of the process (/proc/self/task), Python's and native ones (FFmpeg, BLAS)",
        value=os_thread_count(),
    )


def os_thread_count() -> int:
    """Threads of this process as the OS counts them (Python's own count where there is no
    /proc)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def thread_group(name: str) -> str:
    """``asyncio_3`` -> ``asyncio``, ``batcher-viseme`` -> ``batcher``, ``Thread-7 (run)``
    -> ``Thread``: a bounded label set."""
    for separator in ("_", "-", " "):
        name = name.split(separator, 1)[0]
    return name or "unnamed"
