"""Live audio -> one mel window per video frame, as soon as that window is complete.

Used by the realtime pipeline for both sources: a TTS sentence is pushed whole and finished
at once; a microphone is pushed 20 ms at a time and never finished. The windows, audio and
RMS are identical to the offline renderer's (``build_requests`` over ``audio_for_frames``
audio), whatever the chunking.

Look-ahead: frame ``i``'s window covers mel frames ``mel_start(i) .. mel_start(i)+15``, i.e.
audio up to 200 ms after the frame starts, and the centred STFT needs another 25 ms beyond
that. A live source therefore gets frame ``i`` about 172 ms after frame ``i``'s own audio
has arrived; the pipeline delays that audio by the same amount so the pair stays together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inference.audio_io import rms
from inference.frames import MEL_STEP, SAMPLES_PER_FRAME
from inference.lipsync import WINDOW_SAMPLES
from inference.mel import HOP, MIN_VALUE, N_FFT, N_MELS, StreamingMel, mel_frames_needed, mel_start

LOOKAHEAD_SAMPLES = (mel_frames_needed(0) - 1) * HOP + N_FFT // 2 - SAMPLES_PER_FRAME
"""Samples that must arrive after a frame's own audio before its window is complete."""


@dataclass(frozen=True)
class FrameAudio:
    """Everything a video frame needs from the audio stream."""

    index: int
    """Frame index since the stream began (frame i covers samples [i*640, (i+1)*640))."""
    mel: np.ndarray
    """float32 (80, 16) window starting at this frame's time."""
    audio: np.ndarray
    """float32 (640,) the frame's own audio (zero-padded at the end of a finished stream)."""
    rms: float
    """RMS of the 200 ms the window spans (compared with the silence threshold)."""


class WindowStream:
    """Push PCM (16 kHz mono float32) in any chunk sizes; get :class:`FrameAudio` in order.

    Memory is bounded: only the mel frames and samples later frames can still use are kept.
    """

    def __init__(self) -> None:
        self._mel = StreamingMel()
        self._mel_buf = np.zeros((N_MELS, 0), np.float32)
        self._mel_base = 0  # absolute index of self._mel_buf[:, 0]
        self._pcm = np.zeros(0, np.float32)
        self._pcm_base = 0  # absolute index of self._pcm[0]
        self._next = 0
        self._finished = False

    @property
    def frames_emitted(self) -> int:
        """How many frames have been returned so far."""
        return self._next

    @property
    def samples_received(self) -> int:
        """How many samples have been pushed (including end padding after finish)."""
        return self._mel.samples_received

    def push(self, pcm: np.ndarray) -> list[FrameAudio]:
        """Add audio; return the frames whose windows became complete."""
        if self._finished:
            raise RuntimeError("push() after finish(): start a new WindowStream")
        samples = np.asarray(pcm, np.float32).reshape(-1)
        if samples.size:
            self._pcm = np.concatenate((self._pcm, samples))
            self._add_mel(self._mel.push(samples))
        return self._emit(final=False)

    def finish(self) -> list[FrameAudio]:
        """End of the stream: pad to a whole frame (as the renderer does), emit the rest."""
        if self._finished:
            return []
        remainder = (-self._mel.samples_received) % SAMPLES_PER_FRAME
        if remainder:
            pad = np.zeros(remainder, np.float32)
            self._pcm = np.concatenate((self._pcm, pad))
            self._add_mel(self._mel.push(pad))
        self._add_mel(self._mel.flush())
        self._finished = True
        return self._emit(final=True)

    def _add_mel(self, mel: np.ndarray) -> None:
        if mel.shape[1]:
            self._mel_buf = np.concatenate((self._mel_buf, mel), axis=1)

    def _emit(self, final: bool) -> list[FrameAudio]:
        total = self._mel_base + self._mel_buf.shape[1]
        if final:
            stop = self._mel.samples_received // SAMPLES_PER_FRAME
        else:
            # Frame i is complete once mel frame mel_start(i)+15 exists; mel_start grows by
            # 3.2 per frame, so stepping until it fails is at most a few iterations.
            stop = self._next
            while mel_frames_needed(stop) <= total:
                stop += 1
        out = [self._frame(i, total) for i in range(self._next, stop)]
        self._next = max(self._next, stop)
        self._trim(total)
        return out

    def _frame(self, i: int, total: int) -> FrameAudio:
        start = mel_start(i)
        if start + MEL_STEP > total:  # past the end: the last 16 frames, like window_for_frame
            start = total - MEL_STEP
        if start < 0:  # fewer than 16 mel frames in the whole stream
            window = np.full((N_MELS, MEL_STEP), MIN_VALUE, np.float32)
            window[:, :total] = self._mel_buf[:, :total]
        else:
            lo = start - self._mel_base
            window = self._mel_buf[:, lo : lo + MEL_STEP].copy()
        a = i * SAMPLES_PER_FRAME - self._pcm_base
        audio = self._pcm[a : a + SAMPLES_PER_FRAME]
        if audio.size < SAMPLES_PER_FRAME:
            audio = np.concatenate((audio, np.zeros(SAMPLES_PER_FRAME - audio.size, np.float32)))
        level = rms(self._pcm[a : a + WINDOW_SAMPLES])
        return FrameAudio(index=i, mel=window, audio=audio.copy(), rms=level)

    def _trim(self, total: int) -> None:
        # Later frames start at mel_start(next) or, near the end, at total-16.
        keep_mel = max(self._mel_base, min(mel_start(self._next), total - MEL_STEP))
        if keep_mel > self._mel_base:
            self._mel_buf = self._mel_buf[:, keep_mel - self._mel_base :]
            self._mel_base = keep_mel
        keep_pcm = self._next * SAMPLES_PER_FRAME
        if keep_pcm > self._pcm_base:
            self._pcm = self._pcm[keep_pcm - self._pcm_base :]
            self._pcm_base = keep_pcm
