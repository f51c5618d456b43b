"""Threads that the OS can tell apart: Python 3.11 names its threads only for itself, so
``/proc/PID/task/*/comm`` (top, ps, py-spy) showed every one of them as "python"."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from concurrent.futures import ThreadPoolExecutor

PR_SET_NAME = 15
"""prctl(2) option naming the calling thread (Linux; at most 15 bytes)."""

_libc: ctypes.CDLL | None = None


def set_os_thread_name(name: str | None = None) -> None:
    """Give the calling thread ``name`` (default: its Python name) in the OS too; a no-op
    where prctl is missing."""
    global _libc
    text = (name or threading.current_thread().name).encode("ascii", "replace")[:15]
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        _libc.prctl(PR_SET_NAME, ctypes.c_char_p(text), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def named_pool(prefix: str, workers: int) -> ThreadPoolExecutor:
    """A bounded pool whose threads carry ``prefix`` in Python and in the OS."""
    return ThreadPoolExecutor(
        max(1, workers), thread_name_prefix=prefix, initializer=set_os_thread_name
    )


def default_workers() -> int:
    """Workers of the server's default executor: asyncio's own formula, capped lower."""
    return min(16, (os.cpu_count() or 1) + 4)
