"""The audio front end: one-shot and streaming mel against a plain librosa recipe, and the
window-per-video-frame indexing."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
from scipy.signal import lfilter

from inference.frames import MEL_STEP, SAMPLE_RATE
from inference.mel import (
    MIN_VALUE,
    StreamingMel,
    frame_count,
    mel_frames_needed,
    mel_start,
    melspectrogram,
    window_for_frame,
)
from inference.tts import TextToSpeech
from tests.media import tone


def librosa_mel(pcm: np.ndarray) -> np.ndarray:
    """The reference recipe written the plain way (shared/reference/wav2lip.md), float64."""
    emphasised = lfilter([1.0, -0.97], [1.0], pcm.astype(np.float64))
    spectrum = librosa.stft(
        emphasised,
        n_fft=800,
        hop_length=200,
        win_length=800,
        window="hann",
        center=True,
        pad_mode="reflect",
    )
    basis = librosa.filters.mel(
        sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600, norm="slaney", htk=False
    )
    mel = basis @ np.abs(spectrum)
    db = 20.0 * np.log10(np.maximum(1e-5, mel)) - 20.0
    return np.clip(8.0 * (db + 100.0) / 100.0 - 4.0, -4.0, 4.0)


@pytest.fixture(scope="module")
def clips(espeak_tts: TextToSpeech) -> dict[str, np.ndarray]:
    """Speech, a tone sweeping through the mel range, noise, and silence with a click."""
    rng = np.random.default_rng(7)
    speech = espeak_tts.synthesize("Привет! Как дела?", "ru").pcm
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    chirp = (0.6 * np.sin(2 * np.pi * (60 * t + 3500 * t**2))).astype(np.float32)
    noise = (0.3 * rng.standard_normal(12_345)).astype(np.float32)
    click = np.zeros(4_001, np.float32)
    click[2_000] = 0.9
    return {
        "speech": np.asarray(speech),
        "chirp": chirp,
        "noise": noise,
        "click": click,
        "tone": tone(440.0, 0.5),
    }


def test_one_shot_matches_librosa(clips: dict[str, np.ndarray]) -> None:
    seen = []
    for name, pcm in clips.items():
        ours = melspectrogram(pcm)
        ref = librosa_mel(pcm)
        assert ours.dtype == np.float32, name
        assert ours.shape == ref.shape == (80, 1 + pcm.size // 200), name
        assert np.abs(ours - ref).max() <= 1e-3, name
        seen.append(ours.ravel())
    # The comparison means something only if the values span the range.
    values = np.concatenate(seen)
    assert values.min() == -4.0 and values.max() > 2.0


def test_values_are_normalised() -> None:
    loud = np.clip(np.random.default_rng(1).standard_normal(8_000) * 3.0, -1.0, 1.0)
    mel = melspectrogram(loud.astype(np.float32))
    assert mel.min() >= -4.0 and mel.max() <= 4.0
    assert mel.max() > 2.0
    assert np.all(melspectrogram(np.zeros(1_600, np.float32)) == MIN_VALUE)


def _stream(pcm: np.ndarray, sizes: list[int]) -> tuple[np.ndarray, StreamingMel]:
    streaming = StreamingMel()
    parts = []
    at = 0
    for size in sizes:
        parts.append(streaming.push(pcm[at : at + size]))
        at += size
    assert at >= pcm.size
    parts.append(streaming.flush())
    for part in parts:
        assert part.dtype == np.float32 and part.shape[0] == 80
    return np.concatenate(parts, axis=1), streaming


def _random_sizes(rng: np.random.Generator, total: int) -> list[int]:
    sizes: list[int] = []
    while sum(sizes) < total:
        kind = rng.integers(0, 4)
        sizes.append([0, 1, int(rng.integers(2, 50)), int(rng.integers(50, 3000))][kind])
    return sizes


@pytest.mark.parametrize("seed", range(4))
def test_streaming_with_random_chunks_equals_one_shot(
    clips: dict[str, np.ndarray], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    for name, pcm in clips.items():
        sizes = _random_sizes(rng, pcm.size)
        streamed, streaming = _stream(pcm, sizes)
        one_shot = melspectrogram(pcm)
        assert streamed.shape == one_shot.shape, name
        assert np.abs(streamed - one_shot).max() <= 1e-4, name
        assert streaming.frames_emitted == one_shot.shape[1]
        assert streaming.samples_received == pcm.size


def test_streaming_one_sample_at_a_time_with_empty_pushes(clips: dict[str, np.ndarray]) -> None:
    pcm = clips["speech"][:3_000]
    sizes = [s for _ in range(pcm.size) for s in (1, 0)]
    streamed, _ = _stream(pcm, sizes)
    assert np.abs(streamed - melspectrogram(pcm)).max() <= 1e-4


def test_streaming_emits_each_frame_as_soon_as_its_samples_exist(
    clips: dict[str, np.ndarray],
) -> None:
    # Frame k is centred on sample 200k, so it needs samples up to 200k + 400: a live source
    # gets its frames with no more delay than that.
    pcm = clips["noise"]
    streaming = StreamingMel()
    emitted = 0
    for received in range(100, pcm.size + 1, 100):
        emitted += streaming.push(pcm[received - 100 : received]).shape[1]
        expected = 0 if received <= 400 else (received - 400) // 200 + 1
        assert emitted == expected == streaming.frames_emitted


@pytest.mark.parametrize("length", [0, 1, 2, 150, 200, 399, 400, 401, 402, 799, 800, 801])
def test_streaming_equals_one_shot_for_short_audio(length: int) -> None:
    pcm = (0.4 * np.random.default_rng(length).standard_normal(length)).astype(np.float32)
    one_shot = melspectrogram(pcm)
    assert one_shot.shape == (80, 0 if length == 0 else 1 + length // 200)
    for sizes in ([length], [1] * length):
        streamed, _ = _stream(pcm, sizes)
        assert streamed.shape == one_shot.shape
        assert np.abs(streamed - one_shot).max(initial=0.0) <= 1e-4


def test_flush_of_an_empty_stream_is_empty() -> None:
    streaming = StreamingMel()
    assert streaming.push(np.zeros(0, np.float32)).shape == (80, 0)
    assert streaming.flush().shape == (80, 0)


def test_window_start_follows_int_i_times_80_over_25() -> None:
    mel = np.arange(80 * 200, dtype=np.float32).reshape(80, 200)
    for i in range(50):
        start = int(i * 80 / 25)
        assert mel_start(i) == start
        assert mel_frames_needed(i) == start + MEL_STEP
        window = window_for_frame(mel, i)
        assert window.shape == (80, MEL_STEP)
        assert np.array_equal(window, mel[:, start : start + MEL_STEP])
    assert [mel_start(i) for i in range(6)] == [0, 3, 6, 9, 12, 16]
    assert mel_start(25) == 80  # one second later, 80 mel frames later


def test_window_past_the_end_uses_the_last_16_frames() -> None:
    mel = np.arange(80 * 40, dtype=np.float32).reshape(80, 40)
    last = mel[:, -MEL_STEP:]
    for i in (8, 10, 12, 100):  # mel_start(8) = 25: 25 + 16 > 40
        assert np.array_equal(window_for_frame(mel, i), last)
    assert np.array_equal(window_for_frame(mel, 7), mel[:, 22:38])


def test_short_audio_window_is_padded_with_silence() -> None:
    mel = melspectrogram(tone(300.0, 0.05))  # 5 mel frames
    assert mel.shape[1] < MEL_STEP
    for i in (0, 1, 3):
        window = window_for_frame(mel, i)
        assert window.shape == (80, MEL_STEP)
        assert np.array_equal(window[:, : mel.shape[1]], mel)
        assert np.all(window[:, mel.shape[1] :] == MIN_VALUE)
    assert np.all(window_for_frame(np.zeros((80, 0), np.float32), 0) == MIN_VALUE)


def test_frame_count_covers_every_sample() -> None:
    assert frame_count(0) == 0
    assert frame_count(1) == 1
    assert frame_count(640) == 1
    assert frame_count(641) == 2
    assert frame_count(16_000) == 25
    assert frame_count(16_001) == 26
    for n in range(1, 5_000, 37):
        count = frame_count(n)
        assert (count - 1) * 640 < n <= count * 640
