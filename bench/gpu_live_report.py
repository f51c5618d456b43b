"""What bench/gpu_live.py measures per level, when its ramp stops, and its markdown table.

Pure functions on plain numbers (no aiortc, no torch), so tests/test_bench_gpu.py checks
them on any machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

TARGET_FPS = 24.0
"""A level is sustained when every session shows at least this many fresh frames per second
(bench/realtime.py's rule; its +-40 ms lip-sync bound is left out: with random Wav2Lip weights
the mouth does not follow the voice, so the lag is reported, not judged)."""
TARGET_SESSIONS = 64
TARGET_FIRST_FRAME_MS = 150.0
FIRST_FRAME_AT = 32
"""The issue's latency target: text -> first frame at most 150 ms with 32 sessions live."""
LIVE_HEADING = "### 4. Live sessions over loopback WebRTC"
THREADS_SHOWN = ("loop", "batcher", "encode")
"""One thread near 100 % of a core while the GPU idles: that thread, not the GPU, is the limit."""


@dataclass
class Level:
    """One level of the ramp: ``sessions`` clients speaking at once."""

    sessions: int
    fps: list[float] = field(default_factory=list)
    """Fresh frames per second, one per session that reported."""
    server_ms: list[float] = field(default_factory=list)
    """Text -> first frame released by the server (its ``speaking_started`` latency)."""
    e2e_ms: list[float] = field(default_factory=list)
    """POST say -> first changed mouth frame arrived at the client."""
    lag_ms: list[float] = field(default_factory=list)
    """Mouth vs audio lag by cross-correlation (> 0: the video is late)."""
    corr: list[float] = field(default_factory=list)
    gpu_util: tuple[float, float] | None = None
    """(mean, max) GPU utilisation in % over the window; None: no GPU or no NVML."""
    cpu_per_session: float = math.nan
    """Server process CPU over the window, % of one core, divided by ``sessions``."""
    threads: dict[str, float] = field(default_factory=dict)
    """Server CPU over the window by thread role (bench/gpu_live_probes.py), % of one core."""
    connect_s: float = math.nan
    """Seconds until the slowest client process had video in all its sessions."""
    seconds: float = 0.0
    """Wall time of the whole level (start of its processes to their end)."""
    errors: list[str] = field(default_factory=list)


def median(values: Sequence[float]) -> float:
    """The median of the finite values (the middle two averaged for an even count); NaN for
    none."""
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return math.nan
    mid = len(finite) // 2
    return finite[mid] if len(finite) % 2 else (finite[mid - 1] + finite[mid]) / 2


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` percentile (0..100) of the finite values, linear between ranks; NaN for none."""
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return math.nan
    rank = (len(finite) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(finite) - 1)
    return finite[low] + (finite[high] - finite[low]) * (rank - low)


def verdict(level: Level) -> str | None:
    """Why ``level`` is not sustained; None when it is."""
    if level.errors:
        return f"{level.sessions} sessions: {level.errors[0]}"
    if len(level.fps) < level.sessions:
        return f"{level.sessions} sessions: only {len(level.fps)} reported"
    worst = min(level.fps)
    if worst < TARGET_FPS:
        return f"{level.sessions} sessions not sustained: min fresh fps {worst:.1f} < 24"
    return None


def stop_reason(
    done: Sequence[Level], left: Sequence[int], elapsed: float, budget: float, stop_early: bool
) -> str | None:
    """Why the ramp stops after the levels ``done`` (None: go on to ``left[0]``).

    ``stop_early``: stop at the first level not sustained (the benchmark); without it every
    level runs (the --quick rehearsal, which exercises them all). The next level is skipped
    when it would end past ``budget`` seconds, guessing it takes twice the last one (twice the
    sessions).
    """
    why = verdict(done[-1])
    if why is not None and stop_early:
        return why
    if not left:
        failed = [str(d.sessions) for d in done if verdict(d) is not None]
        if not failed:
            return f"every level sustained (up to {done[-1].sessions} sessions)"
        return "every level ran (--quick); not sustained at " + ", ".join(failed)
    if elapsed + 2 * done[-1].seconds > budget:
        return (
            f"time budget: {elapsed:.0f} s of {budget:.0f} s spent, "
            f"{left[0]} sessions would not fit"
        )
    return None


def _pair(a: float, b: float, unit: str = "") -> str:
    if not (math.isfinite(a) or math.isfinite(b)):
        return "-"
    return f"{a:.0f} / {b:.0f}{unit}"


def row(level: Level) -> str:
    """One table row: the level's figures (``-`` where nothing was measured)."""
    fps = "-"
    if level.fps:
        fps = f"{min(level.fps):.1f} / {median(level.fps):.1f}"
    lags = [abs(v) for v in level.lag_ms if math.isfinite(v)]
    lag = "-"
    if lags:
        lag = f"{median(level.lag_ms):+.0f} / {max(lags):.0f} (corr {median(level.corr):.2f})"
    gpu = "n/a" if level.gpu_util is None else f"{level.gpu_util[0]:.0f} / {level.gpu_util[1]:.0f}"
    cpu = f"{level.cpu_per_session:.1f}" if math.isfinite(level.cpu_per_session) else "-"
    connect = f"{level.connect_s:.1f}" if math.isfinite(level.connect_s) else "-"
    threads = "-"
    if level.threads:
        threads = " / ".join(f"{level.threads.get(r, 0.0):.0f}" for r in THREADS_SHOWN)
    ok = "yes" if verdict(level) is None else "**no**"
    cells = (
        str(level.sessions),
        fps,
        _pair(median(level.server_ms), percentile(level.server_ms, 95)),
        _pair(median(level.e2e_ms), percentile(level.e2e_ms, 95)),
        lag,
        gpu,
        cpu,
        threads,
        connect,
        ok,
    )
    return "| " + " | ".join(cells) + " |"


def table(levels: Sequence[Level]) -> str:
    head = (
        "| sessions | fresh fps min / median | text -> first frame, server median / p95 (ms) "
        "| end to end median / p95 (ms) | mouth/audio lag median / worst (ms) "
        "| GPU util mean / max (%) | server CPU per session (% of a core) "
        "| server threads: loop / batcher / encode (% of a core) | connect (s) | sustained |"
    )
    rule = "|---:|---|---|---|---|---|---:|---|---:|---|"
    return "\n".join([head, rule, *map(row, levels)])


def targets(levels: Sequence[Level]) -> str:
    """The issue's two live targets against what the ramp showed."""
    sustained = max((lv.sessions for lv in levels if verdict(lv) is None), default=0)
    sessions = "met" if sustained >= TARGET_SESSIONS else "missed"
    at = next((lv for lv in levels if lv.sessions == FIRST_FRAME_AT), None)
    if at is None or not math.isfinite(median(at.server_ms)):
        first = f"not reached (no level of {FIRST_FRAME_AT} sessions ran)"
    else:
        ms = median(at.server_ms)
        first = f"{ms:.0f} ms, {'met' if ms <= TARGET_FIRST_FRAME_MS else 'missed'}"
    return (
        f"Sessions sustained: {sustained} (target >= {TARGET_SESSIONS}: {sessions}). "
        f"Text -> first frame at {FIRST_FRAME_AT} sessions, server median: {first} "
        f"(target <= {TARGET_FIRST_FRAME_MS:.0f} ms)."
    )
