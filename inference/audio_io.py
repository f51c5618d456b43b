"""Decode any common audio container to the pipeline's format (16 kHz mono float32)."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import av
import av.filter
import numpy as np

from inference.frames import SAMPLE_RATE

log = logging.getLogger(__name__)


class AudioDecodeError(ValueError):
    """The input is not audio PyAV can decode, or is longer than allowed."""


MAX_SOURCE_RATE = 48_000
"""Source-quality audio keeps its own rate up to this (MP4s, AAC)."""


@dataclass(frozen=True)
class SourceAudio:
    """Audio at its own rate (up to 48 kHz) and up to two channels: what an MP4 carries,
    while the lip-sync runs on the 16 kHz mono copy."""

    pcm: np.ndarray
    """float32, shape (samples, channels)."""
    rate: int

    @property
    def channels(self) -> int:
        return int(self.pcm.shape[1])

    def span(self, start: float, stop: float) -> np.ndarray:
        """Samples from ``start`` to ``stop`` seconds, zeros past the end."""
        a, b = round(start * self.rate), round(stop * self.rate)
        out = self.pcm[a:b]
        if len(out) < b - a:
            out = np.concatenate((out, np.zeros((b - a - len(out), self.channels), np.float32)))
        return out


class MonoDownmix:
    """An FFmpeg filter graph taking frames of one format, layout and rate to 16 kHz mono
    float, every channel weighted 1/N (or, with ``channels=2`` and ``rate``, to that rate in
    stereo: a stereo input kept as it is, more channels mixed equally into both).

    All of it happens inside FFmpeg, so no frame with more than one plane ever reaches
    numpy: PyAV (18.x) miscounts the planes of planar frames with 8 or more channels, and
    ``to_ndarray()`` on one reads past the buffer and crashes the process. The explicit
    ``pan`` gains keep the level of a file whose channels are equal (swresample's default
    stereo downmix adds them at -3 dB each, 3 dB louder, and clips loud speech).
    """

    def __init__(
        self, frame: av.AudioFrame, channels_out: int = 1, rate_out: int = SAMPLE_RATE
    ) -> None:
        self.key = frame_key(frame)
        self.channels_out = channels_out
        channels = max(1, frame.layout.nb_channels)
        gain = repr(1.0 / channels)
        mix = "+".join(f"{gain}*c{i}" for i in range(channels))
        if channels_out == 1:
            pan_spec = "mono|c0=" + mix
        elif channels == 2:
            pan_spec = "stereo|c0=c0|c1=c1"
        else:
            pan_spec = f"stereo|c0={mix}|c1={mix}"
        layout_out = "mono" if channels_out == 1 else "stereo"
        graph = av.filter.Graph()
        # One thread: FFmpeg would start one worker per CPU for each graph (and so for each
        # live session's microphone), for a few kilobytes of audio a second.
        graph.threads = 1
        source = graph.add_abuffer(
            format=frame.format.name,
            sample_rate=frame.sample_rate,
            layout=frame.layout.name,
            time_base=frame.time_base,
        )
        pan = graph.add("pan", pan_spec)
        rate = graph.add("aresample", str(rate_out))
        out = graph.add("aformat", f"sample_fmts=flt:channel_layouts={layout_out}")
        sink = graph.add("abuffersink")
        source.link_to(pan)
        pan.link_to(rate)
        rate.link_to(out)
        out.link_to(sink)
        graph.configure()
        self._graph = graph

    def push(self, frame: av.AudioFrame | None) -> list[np.ndarray]:
        """Feed one frame (None flushes); the mono float32 samples ready so far."""
        self._graph.push(frame)
        chunks: list[np.ndarray] = []
        while True:
            try:
                out = self._graph.pull()
            except (av.BlockingIOError, av.EOFError):
                return chunks
            assert isinstance(out, av.AudioFrame)
            # Packed float: one plane of `samples` x channels interleaved values.
            samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=True)
            chunks.append(samples if self.channels_out == 1 else samples.reshape(-1, 2))


def frame_key(frame: av.AudioFrame) -> tuple[str, str, int]:
    """What a :class:`MonoDownmix` is built for: a frame with another key needs a new one."""
    return frame.format.name, frame.layout.name, frame.sample_rate


def decode_audio(source: str | Path | bytes, max_seconds: float | None = None) -> np.ndarray:
    """Decode wav/mp3/ogg/m4a/webm (anything FFmpeg reads) to float32 mono at 16 kHz.

    ``source`` is a path or the file's bytes. Raises AudioDecodeError with a readable message
    for corrupt input, input without an audio stream, or input longer than ``max_seconds``.
    Any channel count, layout and sample format is taken (see :class:`MonoDownmix`).
    """
    return _decode(source, max_seconds, source_quality=False).reshape(-1)


def decode_source(source: str | Path | bytes, max_seconds: float | None = None) -> SourceAudio:
    """The same input at its own rate (at most 48 kHz) and in mono or stereo, for output."""
    rate = _first_rate(source)
    pcm = _decode(source, max_seconds, source_quality=True)
    return SourceAudio(pcm=pcm, rate=min(rate, MAX_SOURCE_RATE))


def _first_rate(source: str | Path | bytes) -> int:
    data: str | io.BytesIO = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        with av.open(data, mode="r") as container:
            if not container.streams.audio:
                raise AudioDecodeError("the upload has no audio stream")
            return int(container.streams.audio[0].sample_rate or SAMPLE_RATE)
    except (av.FFmpegError, ValueError, OSError) as e:
        if isinstance(e, AudioDecodeError):
            raise
        raise AudioDecodeError(f"could not decode the audio ({e.__class__.__name__})") from e


def _decode(
    source: str | Path | bytes, max_seconds: float | None, source_quality: bool
) -> np.ndarray:
    data: str | io.BytesIO = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    downmix: MonoDownmix | None = None
    chunks: list[np.ndarray] = []
    total = 0
    rate_out = SAMPLE_RATE
    limit = None if max_seconds is None else max_seconds
    try:
        with av.open(data, mode="r") as container:
            if not container.streams.audio:
                raise AudioDecodeError("the upload has no audio stream")
            stream = container.streams.audio[0]
            for frame in container.decode(stream):
                if frame.samples == 0 or frame.sample_rate <= 0:
                    continue
                if downmix is None or downmix.key != frame_key(frame):
                    # A stream may change layout or rate midway: finish the old graph first.
                    if downmix is not None:
                        chunks += downmix.push(None)
                    elif source_quality:
                        rate_out = min(frame.sample_rate, MAX_SOURCE_RATE)
                    downmix = _graph_for(frame, source_quality, rate_out)
                for chunk in downmix.push(frame):
                    chunks.append(chunk)
                    total += len(chunk)
                if limit is not None and total > limit * rate_out:
                    raise AudioDecodeError(
                        f"audio is longer than the limit of {max_seconds:.0f} s; "
                        "send a shorter file"
                    )
            if downmix is not None:
                chunks += downmix.push(None)
    except AudioDecodeError:
        raise
    except (av.FFmpegError, ValueError, OSError) as e:
        raise AudioDecodeError(
            f"could not decode the audio ({e.__class__.__name__}); send wav, mp3, ogg, m4a or webm"
        ) from e
    return _finish(chunks, source_quality)


def _finish(chunks: list[np.ndarray], source_quality: bool) -> np.ndarray:
    if not chunks:
        raise AudioDecodeError("the audio stream holds no samples")
    pcm = np.concatenate(_same_width(chunks) if source_quality else chunks).astype(
        np.float32, copy=False
    )
    # A float file may hold NaN or infinities; they would poison every mel window after them.
    pcm = np.nan_to_num(pcm, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(pcm, -1.0, 1.0)


def _graph_for(frame: av.AudioFrame, source_quality: bool, rate_out: int) -> MonoDownmix:
    if not source_quality:
        return MonoDownmix(frame)
    return MonoDownmix(frame, min(2, max(1, frame.layout.nb_channels)), rate_out)


def _same_width(chunks: list[np.ndarray]) -> list[np.ndarray]:
    """Source-quality chunks as (n, channels), mono parts doubled where the stream turned
    stereo midway."""
    shaped = [c.reshape(-1, 1) if c.ndim == 1 else c for c in chunks]
    width = max(c.shape[1] for c in shaped)
    return [np.repeat(c, width, axis=1) if c.shape[1] < width else c for c in shaped]


def resample(pcm: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling of mono float audio (exact rational ratio, no drift)."""
    if rate_in == rate_out:
        return pcm.astype(np.float32, copy=False)
    # Imported here: scipy.signal costs about a second to import, and the upload decoder's
    # child process (inference.isolated_decode) starts with this module and never needs it.
    from scipy.signal import resample_poly

    g = np.gcd(rate_in, rate_out)
    out = resample_poly(pcm.astype(np.float64), rate_out // g, rate_in // g)
    return out.astype(np.float32)


def rms(samples: np.ndarray) -> float:
    """Root mean square of float audio (0 for none), in float64 so long spans stay exact."""
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0


def pcm_to_s16(pcm: np.ndarray) -> np.ndarray:
    """float32 [-1, 1] -> int16, clipping instead of wrapping."""
    return (np.clip(pcm, -1.0, 1.0) * 32767.0).astype(np.int16)
