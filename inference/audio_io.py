"""Decode any common audio container to the pipeline's format (16 kHz mono float32)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import av
import av.filter
import numpy as np

from inference.frames import SAMPLE_RATE

log = logging.getLogger(__name__)


class AudioDecodeError(ValueError):
    """The input is not audio PyAV can decode, or is longer than allowed."""


class MonoDownmix:
    """An FFmpeg filter graph taking frames of one format, layout and rate to 16 kHz mono
    float, every channel weighted 1/N.

    All of it happens inside FFmpeg, so no frame with more than one plane ever reaches
    numpy: PyAV (18.x) miscounts the planes of planar frames with 8 or more channels, and
    ``to_ndarray()`` on one reads past the buffer and crashes the process. The explicit
    ``pan`` gains keep the level of a file whose channels are equal (swresample's default
    stereo downmix adds them at -3 dB each, 3 dB louder, and clips loud speech).
    """

    def __init__(self, frame: av.AudioFrame) -> None:
        self.key = frame_key(frame)
        channels = max(1, frame.layout.nb_channels)
        gain = repr(1.0 / channels)
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
        pan = graph.add("pan", "mono|c0=" + "+".join(f"{gain}*c{i}" for i in range(channels)))
        rate = graph.add("aresample", str(SAMPLE_RATE))
        out = graph.add("aformat", "sample_fmts=flt:channel_layouts=mono")
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
            # Packed mono float: one plane of exactly `samples` values.
            chunks.append(out.to_ndarray().reshape(-1).astype(np.float32, copy=True))


def frame_key(frame: av.AudioFrame) -> tuple[str, str, int]:
    """What a :class:`MonoDownmix` is built for: a frame with another key needs a new one."""
    return frame.format.name, frame.layout.name, frame.sample_rate


def decode_audio(source: str | Path | bytes, max_seconds: float | None = None) -> np.ndarray:
    """Decode wav/mp3/ogg/m4a/webm (anything FFmpeg reads) to float32 mono at 16 kHz.

    ``source`` is a path or the file's bytes. Raises AudioDecodeError with a readable message
    for corrupt input, input without an audio stream, or input longer than ``max_seconds``.
    Any channel count, layout and sample format is taken (see :class:`MonoDownmix`).
    """
    data: str | io.BytesIO = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    downmix: MonoDownmix | None = None
    chunks: list[np.ndarray] = []
    total = 0
    limit = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
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
                    downmix = MonoDownmix(frame)
                for chunk in downmix.push(frame):
                    chunks.append(chunk)
                    total += chunk.size
                if limit is not None and total > limit:
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
    if not chunks:
        raise AudioDecodeError("the audio stream holds no samples")
    pcm = np.concatenate(chunks).astype(np.float32, copy=False)
    # A float file may hold NaN or infinities; they would poison every mel window after them.
    pcm = np.nan_to_num(pcm, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(pcm, -1.0, 1.0)


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
