"""Lip-sync as a viewer sees it: analysis of what tests/browser_sync.js records in the page.

The page records, on the browser's performance clock, a small luminance grid of every
displayed video frame and the level of the received audio. Here the mouth is found as the
most varying cells of the grid, its activity is cross-correlated with the audio envelope, and
the lag of the best match is the A/V offset (positive: the sound comes after the mouth).
Shared by the browser tests and ``bench/browser.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SYNC_JS = (Path(__file__).with_name("browser_sync.js")).read_text(encoding="utf-8")
"""Inject with ``context.add_init_script(SYNC_JS)`` before the page loads."""

VIDEO_META = 5
"""Columns before the luminance grid in a video row (see browser_sync.js)."""

FRAME_MS = 40.0
"""One video frame at 25 fps; it stands for the 40 ms of audio it was made from."""

BT1359_WINDOW_MS = (-90.0, 185.0)
"""ITU-R BT.1359 acceptability: audio at most 90 ms early, at most 185 ms late."""
COMPENSATED_WINDOW_MS = (-45.0, 45.0)
"""The live pages' median with their receiver-side correction (web/live-client.js): bench/
browser.py measures single-digit medians; the margin is about one video frame (40 ms) of
scheduling noise on a loaded two-core machine. Without the correction it was +66 ms."""


@dataclass(frozen=True)
class SyncResult:
    """The outcome of one measurement (positive offsets: the sound comes after the mouth)."""

    offset_ms: float
    """Median over speech onsets of (audio onset - mouth onset)."""
    onsets_ms: tuple[float, ...]
    """Each matched onset's audio-minus-mouth difference."""
    xcorr_ms: float
    """Lag of the best cross-correlation of the two envelopes (a second opinion)."""
    correlation: float
    """Normalised cross-correlation at that lag, in [-1, 1]."""
    frames: int
    """Displayed video frames analysed."""
    output_latency_ms: float
    """Audio output latency the page reported and added to the sound's times."""


def mouth_activity(recording: dict[str, Any], cells: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """(display centre times in ms, activity) of the recorded frames.

    Activity is the mean absolute difference from the median picture over the ``cells``
    grid cells that vary most; with speech in the recording those are the mouth's.
    """
    rows = np.asarray(recording["video"], dtype=np.float64)
    if rows.ndim != 2 or len(rows) < 5:
        raise ValueError(f"too few video frames recorded ({len(rows)}): did the video play?")
    # A frame is on screen for one frame time; its audio is heard over the same span.
    times = rows[:, 0] + FRAME_MS / 2
    lum = rows[:, VIDEO_META:]
    varying = np.argsort(lum.std(axis=0))[-cells:]
    region = lum[:, varying]
    activity = np.abs(region - np.median(region, axis=0)).mean(axis=1)
    return times, activity


def audio_envelope(recording: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(times in ms, RMS) of the received audio as heard."""
    rows = np.asarray(recording["audio"], dtype=np.float64)
    if rows.ndim != 2 or len(rows) < 10:
        raise ValueError(f"too few audio samples recorded ({len(rows)})")
    order = np.argsort(rows[:, 0])
    return rows[order, 0], rows[order, 1]


def _zscore(x: np.ndarray) -> np.ndarray:
    std = x.std()
    return (x - x.mean()) / std if std > 0 else x - x.mean()


def onsets(
    times: np.ndarray, level: np.ndarray, fraction: float, min_gap_ms: float = 300.0
) -> np.ndarray:
    """Times where ``level`` rises above ``fraction`` of its loud level after a quiet gap."""
    loud = level > fraction * np.percentile(level, 95)
    found: list[float] = []
    last_loud = -np.inf
    for t, on in zip(times, loud, strict=True):
        if on:
            if t - last_loud >= min_gap_ms:
                found.append(float(t))
            last_loud = t
    return np.asarray(found)


def av_offset(
    recording: dict[str, Any], max_lag_ms: float = 400.0, step_ms: float = 5.0
) -> SyncResult:
    """Match speech onsets of mouth and sound; cross-correlate the envelopes as a check."""
    vt, va = mouth_activity(recording)
    at, aa = audio_envelope(recording)
    start, end = max(vt[0], at[0]), min(vt[-1], at[-1])
    if end - start < 1000:
        raise ValueError("video and audio overlap for less than a second")
    grid = np.arange(start, end, step_ms)
    video = _zscore(np.interp(grid, vt, va))
    # The mouth of one frame sums up 40 ms of sound: smooth the audio the same way.
    width = max(1, round(FRAME_MS / step_ms))
    audio = np.interp(grid, at, aa)
    audio = _zscore(np.convolve(audio, np.ones(width) / width, mode="same"))
    max_lag = int(max_lag_ms / step_ms)
    best_lag, best = 0, -np.inf
    n = len(grid)
    for lag in range(-max_lag, max_lag + 1):
        # lag > 0: compare video at t with audio at t + lag (the sound comes later).
        if lag >= 0:
            v, a = video[: n - lag], audio[lag:]
        else:
            v, a = video[-lag:], audio[: n + lag]
        if len(v) < 50:
            continue
        c = float(np.dot(_zscore(v), _zscore(a)) / len(v))
        if c > best:
            best, best_lag = c, lag
    # A mouth onset is the first frame that opens; it is on screen from its display time.
    mouth_on = onsets(vt - FRAME_MS / 2, va, 0.2)
    sound_on = onsets(at, aa, 0.1)
    diffs = []
    for t in sound_on:
        if len(mouth_on):
            nearest = mouth_on[np.argmin(np.abs(mouth_on - t))]
            if abs(t - nearest) <= max_lag_ms:
                diffs.append(float(t - nearest))
    if not diffs:
        raise ValueError("no speech onset was seen in both the picture and the sound")
    return SyncResult(
        offset_ms=float(np.median(diffs)),
        onsets_ms=tuple(diffs),
        xcorr_ms=best_lag * step_ms,
        correlation=best,
        frames=len(vt),
        output_latency_ms=float(np.median(np.asarray(recording["audio"])[:, 2])),
    )


def speech_level(recording: dict[str, Any], t0: float, t1: float) -> float:
    """Mean audio RMS between two performance-clock times (ms)."""
    t, rms = audio_envelope(recording)
    inside = (t >= t0) & (t < t1)
    return float(rms[inside].mean()) if inside.any() else 0.0


PHRASES = ("Привет!", "Как дела?", "Мама мыла раму.")
"""Spoken one at a time with pauses between, so every phrase gives a clean onset."""

STATUS = "document.getElementById('rt-status').textContent"


async def record_phrases(
    page: Any, phrases: tuple[str, ...] = PHRASES, language: str = "ru", gap_ms: int = 600
) -> dict[str, Any]:
    """On a connected /realtime page: record A/V while it speaks each phrase in turn.

    The recording gains ``spans``: [say pressed, speaking ended] per phrase (performance ms).
    """
    await page.select_option("#rt-language", language)
    await page.evaluate("window.__avsync.start('rt-video')")
    await page.wait_for_timeout(gap_ms + 400)
    spans = []
    for phrase in phrases:
        await page.fill("#rt-text", phrase)
        pressed = await page.evaluate("performance.now()")
        await page.click("#rt-say")
        await page.wait_for_function(f"{STATUS}.startsWith('speaking')", timeout=30_000)
        await page.wait_for_function(f"{STATUS} === 'listening'", timeout=30_000)
        spans.append((pressed, await page.evaluate("performance.now()")))
        await page.wait_for_timeout(gap_ms)
    rec: dict[str, Any] = await page.evaluate("window.__avsync.stop()")
    rec["spans"] = spans
    return rec
