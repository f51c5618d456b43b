"""The in-browser lip-sync analysis on recordings with a known offset (no browser needed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.browser_sync import av_offset, mouth_activity, speech_level

BURSTS_MS = ((1000.0, 1600.0), (2400.0, 3200.0), (4000.0, 4480.0))


def speaking(t: np.ndarray) -> np.ndarray:
    return np.any([(t >= a) & (t < b) for a, b in BURSTS_MS], axis=0)


def recording(audio_late_ms: float, seed: int = 0) -> dict[str, Any]:
    """What browser_sync.js would return for a mouth that opens exactly on each burst, the
    sound following it by ``audio_late_ms``, with a blink and pixel noise on the picture."""
    rng = np.random.default_rng(seed)
    frames = np.arange(0.0, 5500.0, 40.0)
    lum = np.full((len(frames), 32 * 32), 120.0) + rng.normal(0, 0.5, (len(frames), 1024))
    # The mouth: 20 cells, open (darker) and wobbling while speaking.
    wobble = 30 + 20 * np.sin(frames / 60.0)
    lum[:, 600:620] -= (speaking(frames) * wobble)[:, None]
    lum[(frames > 300) & (frames < 420), 200:206] -= 60  # one blink, far from the mouth
    meta = np.column_stack([frames, frames / 1000, frames, frames, np.arange(len(frames))])
    audio_t = np.arange(0.0, 5500.0, 10.0)
    rms = 0.2 * speaking(audio_t - audio_late_ms) * (0.6 + 0.4 * rng.random(len(audio_t)))
    rms += 0.002 * rng.random(len(audio_t))
    return {
        "grid": 32,
        "video": np.hstack([meta, lum]).tolist(),
        "audio": np.column_stack([audio_t, rms, np.full(len(audio_t), 40.0)]).tolist(),
    }


@pytest.mark.parametrize("late", [-80.0, 0.0, 40.0, 120.0])
def test_known_offsets_are_recovered(late: float) -> None:
    sync = av_offset(recording(late))
    assert len(sync.onsets_ms) == 3
    assert abs(sync.offset_ms - late) <= 15, sync
    assert abs(sync.xcorr_ms - late) <= 45, sync
    assert sync.correlation > 0.5 and sync.output_latency_ms == 40


def test_mouth_activity_rests_between_bursts() -> None:
    times, activity = mouth_activity(recording(0.0))
    quiet = activity[~speaking(times - 20)]
    loud = activity[speaking(times - 20)]
    assert loud.mean() > 10 * quiet.mean()


def test_speech_level_and_empty_recordings() -> None:
    rec = recording(0.0)
    assert speech_level(rec, 1100, 1500) > 20 * speech_level(rec, 1700, 2300)
    with pytest.raises(ValueError, match="did the video play"):
        av_offset({"grid": 32, "video": [], "audio": rec["audio"]})
