"""Decode any common audio container to the pipeline's format (16 kHz mono float32)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import av
import numpy as np
from scipy.signal import resample_poly

from inference.frames import SAMPLE_RATE

log = logging.getLogger(__name__)


class AudioDecodeError(ValueError):
    """The input is not audio PyAV can decode, or is longer than allowed."""


def decode_audio(source: str | Path | bytes, max_seconds: float | None = None) -> np.ndarray:
    """Decode wav/mp3/ogg/m4a/webm (anything FFmpeg reads) to float32 mono at 16 kHz.

    ``source`` is a path or the file's bytes. Raises AudioDecodeError with a readable message
    for corrupt input, input without an audio stream, or input longer than ``max_seconds``.
    """
    data: str | io.BytesIO = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    resampler: av.AudioResampler | None = None
    chunks: list[np.ndarray] = []
    total = 0
    limit = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
    try:
        with av.open(data, mode="r") as container:
            if not container.streams.audio:
                raise AudioDecodeError("the upload has no audio stream")
            stream = container.streams.audio[0]
            for frame in container.decode(stream):
                if resampler is None:
                    # Keep the channels and average them here: FFmpeg's own downmix adds
                    # them at -3 dB each, so equal channels come out 3 dB louder and clip.
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout,
                                                  rate=SAMPLE_RATE)
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().mean(axis=0, dtype=np.float32)
                    chunks.append(chunk)
                    total += chunk.size
                if limit is not None and total > limit:
                    raise AudioDecodeError(
                        f"audio is longer than the limit of {max_seconds:.0f} s; "
                        "send a shorter file"
                    )
            for out in resampler.resample(None) if resampler is not None else ():
                chunks.append(out.to_ndarray().mean(axis=0, dtype=np.float32))
    except AudioDecodeError:
        raise
    except (av.FFmpegError, ValueError, OSError) as e:
        raise AudioDecodeError(
            f"could not decode the audio ({e.__class__.__name__}); send wav, mp3, ogg, m4a or webm"
        ) from e
    if not chunks:
        raise AudioDecodeError("the audio stream holds no samples")
    pcm = np.concatenate(chunks).astype(np.float32, copy=False)
    return np.clip(pcm, -1.0, 1.0)


def resample(pcm: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling of mono float audio (exact rational ratio, no drift)."""
    if rate_in == rate_out:
        return pcm.astype(np.float32, copy=False)
    g = np.gcd(rate_in, rate_out)
    out = resample_poly(pcm.astype(np.float64), rate_out // g, rate_in // g)
    return out.astype(np.float32)


def pcm_to_s16(pcm: np.ndarray) -> np.ndarray:
    """float32 [-1, 1] -> int16, clipping instead of wrapping."""
    return (np.clip(pcm, -1.0, 1.0) * 32767.0).astype(np.int16)
