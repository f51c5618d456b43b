"""The presenter's real devices (the ``present`` extra): a sounddevice microphone and
speaker, and a pyvirtualcam camera, each imported only when asked for.

The speaker measures its own latency (each chunk's wait in its buffer plus the DAC time
PortAudio reports) so the presenter can hold the frames back by it (rtc/outputs/present.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from inference.frames import FPS, SAMPLE_RATE
from rtc.live.clock import AUDIO_SAMPLES
from rtc.live.queues import DropOldestQueue

log = logging.getLogger(__name__)

SPEAKER_CHUNKS = 2
"""20 ms chunks waiting for the output device at most (40 ms). The device drains exactly as fast
as the clock releases, so anything queued beyond the jitter this absorbs would stay for good, the
voice that much behind the face (a 200 ms queue filled up while PulseAudio's stream stalled and
stayed full: 250 ms apart); a catch-up burst after a stall is cut back to this instead."""
LATENCY_SMOOTHING = 0.05
"""Weight of each 20 ms in the speaker's smoothed latency (a time constant of ~0.4 s)."""
STEADY_S = 0.2
"""The speaker plays once its callback has kept the device's pace this long."""
STEADY_GAP = 0.05
"""A longer pause between callbacks than this is a stall, not the device's pace."""
SPEAKER_START_S = 5.0
"""Seconds to wait for the speaker to play before presenting anyway."""
MIC_QUEUE_CHUNKS = 50
"""20 ms microphone chunks (1 s) buffered between the audio callback and the loop at most."""


class DeviceError(RuntimeError):
    """A device or the optional dependency is missing; the message lists what exists."""


def _sounddevice() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError) as e:  # OSError: PortAudio itself is missing
        raise DeviceError(
            "the microphone and speaker need sounddevice: "
            "pip install 'talking-avatar[present]' (and PortAudio, e.g. "
            "apt-get install libportaudio2)"
        ) from e
    return sounddevice


def list_audio_devices(kind: str) -> str:
    """Human-readable list of input or output devices (``kind``: 'input' | 'output')."""
    sd = _sounddevice()
    key = "max_input_channels" if kind == "input" else "max_output_channels"
    rows = [f"  {i}: {d['name']}" for i, d in enumerate(sd.query_devices()) if d[key] > 0]
    return "\n".join(rows) or "  (none)"


def _device(sd: Any, name: str, kind: str) -> Any:
    try:
        sd.check_input_settings(
            device=_index(name), samplerate=SAMPLE_RATE, channels=1
        ) if kind == "input" else sd.check_output_settings(
            device=_index(name), samplerate=SAMPLE_RATE, channels=1
        )
    except Exception as e:
        raise DeviceError(
            f"no usable {kind} device {name!r} ({e}); available:\n{list_audio_devices(kind)}"
        ) from e
    return _index(name)


def _index(name: str) -> int | str:
    return int(name) if name.isdigit() else name


class SoundDeviceMic:
    """A sounddevice input stream delivering 20 ms chunks through a bounded queue."""

    def __init__(self, device: str) -> None:
        sd = _sounddevice()
        self._loop = asyncio.get_running_loop()
        # The loop behind: the oldest sound is the least useful, so it goes first.
        self._queue: DropOldestQueue[np.ndarray] = DropOldestQueue(MIC_QUEUE_CHUNKS)
        self._stream = sd.InputStream(
            device=_device(sd, device, "input"),
            samplerate=SAMPLE_RATE,
            channels=1,
            dtype="float32",
            blocksize=AUDIO_SAMPLES,
            callback=self._callback,
        )
        # Started by the first read, not here: what it heard while the rest opened would
        # reach the pipeline stale, all at once, and delay the mouth by as much for good.
        self._started = False

    def _callback(self, data: np.ndarray, frames: int, info: Any, status: Any) -> None:
        self._loop.call_soon_threadsafe(self._put, data[:, 0].copy())

    def _put(self, chunk: np.ndarray) -> None:
        self._queue.put(chunk)

    async def chunks(self) -> AsyncIterator[np.ndarray]:
        """Chunks as they arrive (the device starts listening now)."""
        if not self._started:
            self._started = True
            self._stream.start()
        while True:
            chunk = await self._queue.get()
            if chunk is None:  # never closed while the device runs; for the type
                return
            yield chunk

    def close(self) -> None:
        """Stop the device."""
        with contextlib.suppress(Exception):
            self._stream.stop()
            self._stream.close()


class SoundDeviceSpeaker:
    """A sounddevice output stream (a speaker, or a virtual microphone's sink), fed through a
    bounded buffer that PortAudio's callback drains: ``write`` never blocks the event loop
    (a blocking write there would hold back the frames released with the sound).

    ``latency`` is measured, not assumed: each chunk's wait in the buffer plus what PortAudio
    says it still holds ahead of it when the callback takes it (its DAC time), smoothed.
    """

    def __init__(self, device: str) -> None:
        sd = _sounddevice()
        # (time.monotonic() of the write, samples): the oldest goes when it falls behind.
        self._chunks: collections.deque[tuple[float, np.ndarray]] = collections.deque(
            maxlen=SPEAKER_CHUNKS
        )
        self._lock = threading.Lock()
        self.underruns = 0
        self.dropped = 0
        """Chunks cut from a burst to keep the voice in step with the face."""
        self._latency: float | None = None
        self.playing = threading.Event()
        """Set once the device keeps pace (see :meth:`wait_playing`)."""
        self._last_callback = self._steady_since = -1.0
        self._stream = sd.OutputStream(
            device=_device(sd, device, "output"),
            samplerate=SAMPLE_RATE,
            channels=1,
            dtype="int16",
            blocksize=AUDIO_SAMPLES,
            latency="low",
            callback=self._callback,
        )
        self._stream.start()

    @property
    def latency(self) -> float:
        """Seconds from :meth:`write` to the output, smoothed; until the first chunk has
        played, PortAudio's nominal output latency plus half a chunk's wait."""
        if self._latency is None:
            return float(self._stream.latency) + AUDIO_SAMPLES / SAMPLE_RATE / 2
        return self._latency

    async def wait_playing(self, timeout: float = SPEAKER_START_S) -> bool:
        """Wait until the device plays; False if it did not within ``timeout``. PulseAudio's
        stream through ALSA calls back a few times, then stalls 0.5-2 s before it plays:
        what is written meanwhile never comes out, so presenting waits it out."""
        return await asyncio.to_thread(self.playing.wait, timeout)

    def _callback(self, out: np.ndarray, frames: int, info: Any, status: Any) -> None:
        now = time.monotonic()
        if now - self._last_callback > STEADY_GAP:
            self._steady_since = now
        self._last_callback = now
        if now - self._steady_since >= STEADY_S:
            self.playing.set()
        with self._lock:
            item = self._chunks.popleft() if self._chunks else None
        if item is None:
            self.underruns += self._latency is not None  # not before anything played
            out.fill(0)
            return
        written, chunk = item
        out.fill(0)
        out[: min(frames, len(chunk)), 0] = chunk[:frames]
        # What PortAudio holds ahead of this buffer; some hosts report 0 (then: nominal).
        ahead = info.outputBufferDacTime - info.currentTime
        if not 0 < ahead < 1:
            ahead = float(self._stream.latency)
        sample = now - written + ahead
        previous = self._latency
        self._latency = (
            sample if previous is None else previous + LATENCY_SMOOTHING * (sample - previous)
        )

    def write(self, samples: np.ndarray) -> None:
        """Queue 20 ms for the device (the oldest goes when it falls behind)."""
        with self._lock:
            self.dropped += len(self._chunks) == SPEAKER_CHUNKS
            self._chunks.append((time.monotonic(), np.asarray(samples, np.int16).reshape(-1)))

    def close(self) -> None:
        """Stop the device."""
        with contextlib.suppress(Exception):
            self._stream.stop()
            self._stream.close()


class VirtualCamera:
    """pyvirtualcam (v4l2loopback on Linux, the OBS virtual camera on Windows/macOS)."""

    def __init__(self, width: int, height: int) -> None:
        try:
            import pyvirtualcam
        except ImportError as e:
            raise DeviceError(
                "--vcam needs pyvirtualcam: pip install 'talking-avatar[present]'"
            ) from e
        try:
            self._camera = pyvirtualcam.Camera(width=width, height=height, fps=FPS)
        except Exception as e:  # pyvirtualcam raises RuntimeError with the backend's reason
            raise DeviceError(
                f"no virtual camera is available ({e}); on Linux load "
                "v4l2loopback (see docs/presenter.md), on Windows/macOS "
                "install OBS and start its virtual camera once"
            ) from e
        log.info("virtual camera: %s", self._camera.device)

    def send(self, rgb: np.ndarray) -> None:
        """One frame (the clock already paces them)."""
        self._camera.send(rgb)

    def close(self) -> None:
        """Release the device."""
        with contextlib.suppress(Exception):
            self._camera.close()


async def open_audio(
    mic_device: str, speaker_device: str | None
) -> tuple[SoundDeviceMic, SoundDeviceSpeaker | None]:
    """The microphone and (optionally) the speaker, ready to present: the speaker plays."""
    mic = SoundDeviceMic(mic_device)
    if speaker_device is None:
        return mic, None
    speaker = SoundDeviceSpeaker(speaker_device)
    if not await speaker.wait_playing():
        log.warning("speaker %s did not start playing in %.0f s", speaker_device, SPEAKER_START_S)
    return mic, speaker
