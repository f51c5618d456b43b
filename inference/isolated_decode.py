"""Decoding untrusted audio in a child process, so that a crash there fails one request.

FFmpeg's demuxers and decoders are C code, and an upload is whatever a stranger sent. In
process, one decoder (or binding) bug that segfaults takes every live session with it; in a
child it is one refused upload. The child is a fresh interpreter (``python -m
inference.isolated_decode``) that imports only PyAV and numpy, about 0.3 s: small beside a
render, and unlike ``fork`` it inherits none of the server's threads or locks (and unlike
multiprocessing's spawn/forkserver it does not re-run the server's main module).

Protocol: the upload on the child's stdin, the time limit as its argument; on stdout
``OK`` + float32 samples, or ``ER`` + a UTF-8 message. Anything else is a crash. With a
second argument ``source``, ``OK`` is followed by the 16 kHz mono sample count (uint64), those
samples, the source rate and channel count (uint32 each) and the source-quality samples.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from inference.audio_io import AudioDecodeError, SourceAudio, decode_audio, decode_source

log = logging.getLogger(__name__)

DECODE_TIMEOUT = 120.0
"""Seconds a child may take for one file (a 300 s upload decodes in well under 2 s)."""
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class DecoderCrashed(AudioDecodeError):
    """The child decoding the upload died or hung; the server itself is unharmed."""


def decode_untrusted(
    data: bytes, max_seconds: float | None = None, timeout: float = DECODE_TIMEOUT
) -> np.ndarray:
    """:func:`decode_audio` of ``data`` in a child process (blocking; call off the loop).

    Raises AudioDecodeError for undecodable input, DecoderCrashed when the child died
    (a signal, an abort) or took longer than ``timeout`` seconds.
    """
    args = [
        sys.executable,
        "-m",
        "inference.isolated_decode",
        "none" if max_seconds is None else repr(float(max_seconds)),
    ]
    return run_decoder(args, data, timeout)


def decode_untrusted_with_source(
    data: bytes, max_seconds: float | None = None, timeout: float = DECODE_TIMEOUT
) -> tuple[np.ndarray, SourceAudio]:
    """Like :func:`decode_untrusted`, also returning the audio at its own rate and channels
    (for the MP4's sound; the lip-sync takes the 16 kHz mono samples)."""
    args = [
        sys.executable,
        "-m",
        "inference.isolated_decode",
        "none" if max_seconds is None else repr(float(max_seconds)),
        "source",
    ]
    out = run_decoder(args, data, timeout, raw=True).tobytes()
    count = int(np.frombuffer(out[:8], np.uint64)[0])
    mono = np.frombuffer(out[8 : 8 + 4 * count], np.float32).copy()
    rate, channels = (int(v) for v in np.frombuffer(out[8 + 4 * count : 16 + 4 * count], np.uint32))
    samples = np.frombuffer(out[16 + 4 * count :], np.float32).reshape(-1, channels).copy()
    return mono, SourceAudio(pcm=samples, rate=rate)


def run_decoder(args: list[str], data: bytes, timeout: float, raw: bool = False) -> np.ndarray:
    """Run the child command ``args`` on ``data`` and read its answer (see the module doc)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    try:
        done = subprocess.run(
            args, input=data, capture_output=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise DecoderCrashed(
            f"decoding the audio took longer than {timeout:.0f} s; send a shorter or simpler file"
        ) from None
    out = done.stdout
    if done.returncode == 0 and out[:2] == b"OK":
        if raw:
            return np.frombuffer(out[2:], dtype=np.uint8).copy()
        return np.frombuffer(out[2:], dtype=np.float32).copy()
    if done.returncode == 0 and out[:2] == b"ER":
        raise AudioDecodeError(out[2:].decode("utf-8", "replace"))
    log.warning(
        "the audio decoder child died (exit code %s) on a %d-byte upload: %s",
        done.returncode,
        len(data),
        done.stderr[-500:].decode("utf-8", "replace"),
    )
    raise DecoderCrashed("the audio decoder failed on this file; send wav, mp3, ogg, m4a or webm")


def _main() -> int:
    """The child: decode stdin, answer on stdout."""
    limit = None if sys.argv[1] == "none" else float(sys.argv[1])
    data = sys.stdin.buffer.read()
    try:
        mono = decode_audio(data, limit)
        answer = b"OK" + mono.tobytes()
        if len(sys.argv) > 2 and sys.argv[2] == "source":
            source = decode_source(data, limit)
            header = np.array([mono.size], np.uint64).tobytes()
            shape = np.array([source.rate, source.channels], np.uint32).tobytes()
            answer = b"OK" + header + mono.tobytes() + shape + source.pcm.tobytes()
    except AudioDecodeError as e:
        answer = b"ER" + str(e).encode("utf-8")
    except MemoryError:
        answer = b"ER" + b"the audio is too large to decode"
    sys.stdout.buffer.write(answer)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
