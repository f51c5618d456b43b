"""Live audio -> one mel window per video frame, as soon as the engine can use it.

Used by the realtime pipeline for both sources: a TTS sentence is handed over whole
(:meth:`WindowStream.finish` with its audio); a microphone is pushed 20 ms at a time and never
finished. The windows, audio and RMS of a finished stream are identical to the offline
renderer's (``build_requests`` over ``audio_for_frames`` audio), whatever the chunking.

Look-ahead is the engine's (``LipSyncEngine.lookahead_frames``): frame ``i``'s window covers
mel frames ``mel_start(i) .. mel_start(i)+15`` (200 ms from the frame's start), and an engine
reading only the first ``n`` of them gets the frame once those exist; the rest of its window
is then silence (MIN_VALUE) and the RMS covers the 200 ms that end with those ``n`` hops
(``lipsync.window_rms``). The centred STFT needs 25 ms beyond the last one, so frame ``i``
is ready :func:`lookahead_samples` after its own audio has arrived: 172.5 ms for Wav2Lip's
whole window, 47.5 ms for the viseme engine's six mel frames (less by up to 10 ms where
``mel_start`` rounds down). The pipeline releases that audio with the frame, so picture and
sound stay paired.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inference.audio_io import rms
from inference.frames import MEL_STEP, SAMPLES_PER_FRAME
from inference.lipsync import WINDOW_SAMPLES
from inference.mel import HOP, MIN_VALUE, N_FFT, N_MELS, StreamingMel, mel_start


def lookahead_samples(frames: int = MEL_STEP) -> int:
    """Samples that must arrive after a frame's own audio before the first ``frames`` mel
    frames of its window exist (at most: where ``mel_start`` rounds down, up to 160 fewer)."""
    return (frames - 1) * HOP + N_FFT // 2 - SAMPLES_PER_FRAME


LOOKAHEAD_SAMPLES = lookahead_samples(MEL_STEP)
"""Samples that must arrive after a frame's own audio before its whole window is complete
(Wav2Lip's look-ahead, 2760: 172.5 ms)."""


@dataclass(frozen=True)
class FrameAudio:
    """Everything a video frame needs from the audio stream."""

    index: int
    """Frame index since the stream began (frame i covers samples [i*640, (i+1)*640))."""
    mel: np.ndarray
    """float32 (80, 16) window starting at this frame's time; on a live stream the columns
    after the engine's ``lookahead_frames`` may be silence (MIN_VALUE) still."""
    audio: np.ndarray
    """float32 (640,) the frame's own audio (zero-padded at the end of a finished stream)."""
    rms: float
    """RMS of the 200 ms ending where the engine's reading ends (``lookahead_frames`` hops
    after the frame's start: the whole window's own 200 ms for Wav2Lip), compared with the
    silence threshold (``lipsync.window_rms``)."""


class WindowStream:
    """Push PCM (16 kHz mono float32) in any chunk sizes; get :class:`FrameAudio` in order.

    ``lookahead_frames`` is the engine's (1..16): a frame is emitted once that many mel
    frames of its window exist. Memory is bounded: only the mel frames and samples later
    frames can still use are kept.
    """

    def __init__(self, lookahead_frames: int = MEL_STEP) -> None:
        if not 1 <= lookahead_frames <= MEL_STEP:
            raise ValueError(
                f"an engine's lookahead_frames must be 1..{MEL_STEP}, not {lookahead_frames}"
            )
        self.lookahead_frames = lookahead_frames
        # The RMS covers the 200 ms ending where the engine's reading ends (window_rms).
        self._rms_end = lookahead_frames * HOP
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
        self._add(pcm)
        return self._emit(final=False)

    def finish(self, pcm: np.ndarray | None = None) -> list[FrameAudio]:
        """End of the stream: add the last audio ``pcm`` (emitting nothing early, so a clip
        handed over whole gets exactly the renderer's windows), pad to a whole frame (as the
        renderer does), emit the rest."""
        if self._finished:
            return []
        if pcm is not None:
            self._add(pcm)
        remainder = (-self._mel.samples_received) % SAMPLES_PER_FRAME
        if remainder:
            pad = np.zeros(remainder, np.float32)
            self._pcm = np.concatenate((self._pcm, pad))
            self._add_mel(self._mel.push(pad))
        self._add_mel(self._mel.flush())
        self._finished = True
        return self._emit(final=True)

    def _add(self, pcm: np.ndarray) -> None:
        samples = np.asarray(pcm, np.float32).reshape(-1)
        if samples.size:
            self._pcm = np.concatenate((self._pcm, samples))
            self._add_mel(self._mel.push(samples))

    def _add_mel(self, mel: np.ndarray) -> None:
        if mel.shape[1]:
            self._mel_buf = np.concatenate((self._mel_buf, mel), axis=1)

    def _emit(self, final: bool) -> list[FrameAudio]:
        total = self._mel_base + self._mel_buf.shape[1]
        if final:
            stop = self._mel.samples_received // SAMPLES_PER_FRAME
        else:
            # Frame i is ready once mel frame mel_start(i)+lookahead-1 exists; mel_start grows
            # by 3.2 per frame, so stepping until it fails is at most a few iterations.
            stop = self._next
            while mel_start(stop) + self.lookahead_frames <= total:
                stop += 1
        out = [self._frame(i, total, final) for i in range(self._next, stop)]
        self._next = max(self._next, stop)
        self._trim(total)
        return out

    def _frame(self, i: int, total: int, final: bool) -> FrameAudio:
        start = mel_start(i)
        if final and start + MEL_STEP > total:  # past the end: the last 16, like window_for_frame
            start = max(0, total - MEL_STEP)  # (or all of them, when the stream has fewer)
        # Columns not there yet (a live frame the engine needs less of, or a stream shorter
        # than a window) are silence, as window_for_frame pads a short clip.
        window = np.full((N_MELS, MEL_STEP), MIN_VALUE, np.float32)
        lo = start - self._mel_base
        have = self._mel_buf[:, lo : lo + MEL_STEP]
        window[:, : have.shape[1]] = have
        a = i * SAMPLES_PER_FRAME - self._pcm_base
        audio = self._pcm[a : a + SAMPLES_PER_FRAME]
        if audio.size < SAMPLES_PER_FRAME:
            audio = np.concatenate((audio, np.zeros(SAMPLES_PER_FRAME - audio.size, np.float32)))
        end = a + self._rms_end
        level = rms(self._pcm[max(0, end - WINDOW_SAMPLES) : end])
        return FrameAudio(index=i, mel=window, audio=audio.copy(), rms=level)

    def _trim(self, total: int) -> None:
        # Later frames start at mel_start(next) or, near the end, at total-16.
        keep_mel = max(self._mel_base, min(mel_start(self._next), total - MEL_STEP))
        if keep_mel > self._mel_base:
            self._mel_buf = self._mel_buf[:, keep_mel - self._mel_base :]
            self._mel_base = keep_mel
        # The next frame's RMS may reach back before its own audio (window_rms).
        keep_pcm = max(0, self._next * SAMPLES_PER_FRAME + self._rms_end - WINDOW_SAMPLES)
        if keep_pcm > self._pcm_base:
            self._pcm = self._pcm[keep_pcm - self._pcm_base :]
            self._pcm_base = keep_pcm
