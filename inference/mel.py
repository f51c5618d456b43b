"""Wav2Lip's audio front end, one-shot and streaming, and the window-per-video-frame indexing.

Recipe (must match training exactly, see shared/reference/wav2lip.md): pre-emphasis 0.97 ->
STFT (n_fft 800, hop 200, Hann 800, centred with reflect padding) -> |X| -> 80 Slaney mel bands
(55..7600 Hz) -> 20*log10(max(1e-5, m)) - 20 -> clip(8*(S+100)/100 - 4, -4, 4).
"""

from __future__ import annotations

from functools import lru_cache

import librosa
import numpy as np
from scipy.signal import lfilter

from inference.frames import FPS, MEL_STEP, SAMPLE_RATE

N_FFT = 800
HOP = 200
N_MELS = 80
PREEMPHASIS = 0.97
MEL_PER_SECOND = SAMPLE_RATE / HOP  # 80
MIN_VALUE = -4.0
"""Normalised value of silence; used to pad windows past the start of the audio."""


@lru_cache(maxsize=1)
def mel_basis() -> np.ndarray:
    """The (80, 401) Slaney mel filter bank, built once."""
    basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=55, fmax=7600)
    return basis.astype(np.float32)


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    # Periodic Hann, as librosa.stft uses (scipy's "fftbins" convention).
    n = np.arange(N_FFT)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)).astype(np.float32)


def _normalise(magnitude: np.ndarray) -> np.ndarray:
    mel = mel_basis() @ magnitude
    db = 20.0 * np.log10(np.maximum(1e-5, mel)) - 20.0
    return np.clip(8.0 * (db + 100.0) / 100.0 - 4.0, -4.0, 4.0).astype(np.float32)


def _frames_to_mel(frames: np.ndarray) -> np.ndarray:
    """(n, 800) pre-emphasised frames -> (80, n) normalised mel."""
    if frames.shape[0] == 0:
        return np.zeros((N_MELS, 0), np.float32)
    spectrum = np.fft.rfft(frames * _hann(), axis=1)
    return _normalise(np.abs(spectrum).T.astype(np.float32))


def melspectrogram(pcm: np.ndarray) -> np.ndarray:
    """One-shot mel of a whole clip: (80, 1 + len(pcm) // 200) float32."""
    if pcm.size == 0:  # lfilter refuses empty input
        return np.zeros((N_MELS, 0), np.float32)
    emphasised = lfilter([1.0, -PREEMPHASIS], [1.0], pcm.astype(np.float64)).astype(np.float32)
    padded = _reflect_pad(emphasised)
    count = 1 + emphasised.size // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(count)[:, None]
    return _frames_to_mel(padded[idx])


def _reflect_pad(x: np.ndarray) -> np.ndarray:
    half = N_FFT // 2
    if x.size > half:
        return np.pad(x, half, mode="reflect")
    # Too short to reflect (under 25 ms): numpy would wrap repeatedly; zero padding is the
    # only sane choice and such clips carry no speech anyway.
    return np.pad(x, half, mode="constant")


class StreamingMel:
    """Mel frames from audio that arrives in chunks; same values as :func:`melspectrogram`.

    Pre-emphasis state is carried across chunks. Frame k is centred on sample k*200, so it
    is emitted once sample k*200+400 has arrived; the left reflect padding uses the first
    samples, and :meth:`flush` emits the tail with right reflect padding exactly as the
    one-shot computation does. Memory is bounded: only the last 800 samples are kept.
    """

    def __init__(self) -> None:
        self._last_raw = 0.0
        self._head = np.zeros(0, np.float32)  # first 401 emphasised samples, for left padding
        self._tail = np.zeros(0, np.float32)  # emphasised samples from self._tail_start on
        self._tail_start = 0
        self._received = 0
        self._next_frame = 0

    @property
    def frames_emitted(self) -> int:
        """How many mel frames have been returned so far."""
        return self._next_frame

    @property
    def samples_received(self) -> int:
        """How many audio samples have been pushed so far."""
        return self._received

    def push(self, pcm: np.ndarray) -> np.ndarray:
        """Add audio; return the (80, n) mel frames that became complete (n may be 0)."""
        x = pcm.astype(np.float32, copy=False).reshape(-1)
        if x.size:
            prev = np.concatenate(([self._last_raw], x[:-1])).astype(np.float32)
            emphasised = x - np.float32(PREEMPHASIS) * prev
            self._last_raw = float(x[-1])
            if self._head.size <= N_FFT // 2:
                self._head = np.concatenate((self._head, emphasised))[: N_FFT // 2 + 1]
            self._tail = np.concatenate((self._tail, emphasised))
            self._received += x.size
        return self._emit(final=False)

    def flush(self) -> np.ndarray:
        """Emit the remaining frames, padding the end by reflection like the one-shot path."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> np.ndarray:
        half = N_FFT // 2
        if final:
            # One-shot count is 1 + n // HOP, and no frame at all for empty audio.
            last = self._received // HOP if self._received else -1
        else:
            last = (self._received - half) // HOP
            # Left reflect padding needs 401 samples before frame 0 can be built.
            if self._received <= half:
                last = -1
        if last < self._next_frame:
            return np.zeros((N_MELS, 0), np.float32)
        ks = np.arange(self._next_frame, last + 1)
        idx = (ks * HOP - half)[:, None] + np.arange(N_FFT)[None, :]
        frames = self._gather(idx, final)
        self._next_frame = last + 1
        self._trim()
        return _frames_to_mel(frames)

    def _gather(self, idx: np.ndarray, final: bool) -> np.ndarray:
        n = self._received
        if final and n <= N_FFT // 2:
            # Too short to reflect: zero padding, as melspectrogram does. Nothing was
            # emitted before the flush, so every sample is still in the tail.
            inside = (idx >= 0) & (idx < n)
            padded = np.zeros(idx.shape, np.float32)
            padded[inside] = self._tail[idx[inside] - self._tail_start]
            return padded
        src = idx.copy()
        src = np.where(src < 0, -src, src)  # left reflect: p[-j] = x[j]
        if final:
            src = np.where(src >= n, 2 * n - 2 - src, src)  # right reflect
        left = src < self._tail_start
        out = np.empty(idx.shape, np.float32)
        out[~left] = self._tail[src[~left] - self._tail_start]
        if left.any():
            out[left] = self._head[src[left]]
        return out

    def _trim(self) -> None:
        # Keep what the next frame (and a final right reflection) can still touch.
        keep_from = max(0, self._next_frame * HOP - N_FFT)
        if keep_from > self._tail_start:
            self._tail = self._tail[keep_from - self._tail_start :]
            self._tail_start = keep_from


def mel_start(frame_index: int, fps: float = FPS) -> int:
    """First mel frame of video frame ``frame_index``'s window (int(i * 80 / fps))."""
    return int(frame_index * MEL_PER_SECOND / fps)


def mel_frames_needed(frame_index: int, fps: float = FPS) -> int:
    """How many mel frames must exist before frame ``frame_index``'s window is complete."""
    return mel_start(frame_index, fps) + MEL_STEP


def window_for_frame(mel: np.ndarray, frame_index: int, fps: float = FPS) -> np.ndarray:
    """The (80, 16) window for a video frame; past the end, the last 16 frames are used."""
    total = mel.shape[1]
    start = mel_start(frame_index, fps)
    if total < MEL_STEP:
        padded = np.full((N_MELS, MEL_STEP), MIN_VALUE, np.float32)
        padded[:, :total] = mel
        return padded
    if start + MEL_STEP > total:
        start = total - MEL_STEP
    return mel[:, start : start + MEL_STEP]


def frame_count(num_samples: int, fps: float = FPS) -> int:
    """Video frames needed to cover ``num_samples`` of audio (the last frame may be partial)."""
    return int(np.ceil(num_samples * fps / SAMPLE_RATE))
