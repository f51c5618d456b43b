"""Virtual presenter: the avatar follows a server-side microphone; no browser involved.

    python server.py present --mic DEVICE [--vcam] [--speaker DEVICE]

The microphone feeds the same pipeline a WebRTC caller's microphone does (echo on, so the voice
travels with the face); the session's media clock releases frame and voice together, and the
frames go to a virtual camera (pyvirtualcam), the voice to an output device (sounddevice), so
Zoom/Meet see and hear the avatar. Sources and sinks are small protocols, so tests run the whole
loop against fakes; the real devices are imported only when asked for (the ``present`` extra).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import av
import numpy as np

from config import AppConfig
from inference.avatar.store import Avatar
from inference.frames import FPS, SAMPLE_RATE
from inference.tts import TextToSpeech
from rtc.live.batcher import Batcher, BatcherPool
from rtc.live.clock import AUDIO_SAMPLES, MediaClock
from rtc.live.options import PipelineOptions
from rtc.live.pipeline import Event, Pipeline
from rtc.live.queues import DropOldestQueue
from rtc.webrtc.tracks import AvatarAudioTrack, AvatarVideoTrack

log = logging.getLogger(__name__)

SPEAKER_CHUNKS = 10
"""20 ms chunks (200 ms) waiting for the output device at most."""
MIC_QUEUE_CHUNKS = 50
"""20 ms microphone chunks (1 s) buffered between the audio callback and the loop at most."""


class DeviceError(RuntimeError):
    """A device or the optional dependency is missing; the message lists what exists."""


class MicSource(Protocol):
    """Microphone: float32 mono 16 kHz chunks, as they arrive, until closed."""

    def chunks(self) -> AsyncIterator[np.ndarray]: ...

    def close(self) -> None: ...


class FrameSink(Protocol):
    """Virtual camera: takes RGB uint8 (h, w, 3) frames at 25 fps."""

    def send(self, rgb: np.ndarray) -> None: ...

    def close(self) -> None: ...


class AudioSink(Protocol):
    """Speaker / virtual microphone: takes s16 mono 16 kHz samples."""

    def write(self, samples: np.ndarray) -> None: ...

    def close(self) -> None: ...


@dataclass
class PresenterStats:
    """What the presenter did."""

    frames: int = 0
    audio_frames: int = 0
    mic_chunks: int = 0


class Presenter:
    """Runs one avatar from ``mic`` into ``camera`` and ``speaker`` until stopped."""

    def __init__(
        self,
        batcher: Batcher,
        avatar: Avatar,
        tts: TextToSpeech,
        mic: MicSource,
        camera: FrameSink | None,
        speaker: AudioSink | None,
        options: PipelineOptions | None = None,
        clock: MediaClock | None = None,
    ) -> None:
        self.id = "present"
        self.clock = clock or MediaClock()
        self.pipeline = Pipeline(
            self.id,
            self.clock,
            batcher,
            avatar,
            tts,
            self._event,
            options or PipelineOptions(echo_mic=True),
        )
        self.video = AvatarVideoTrack(
            self.clock, self.pipeline.video_queue, self.pipeline.first_frame
        )
        self.audio = AvatarAudioTrack(self.clock, self.pipeline.audio_queue)
        self.mic = mic
        self.camera = camera
        self.speaker = speaker
        self.stats = PresenterStats()
        self.events: list[Event] = []

    def _event(self, event: Event) -> None:
        self.events = [*self.events[-99:], event]  # bounded: the last 100
        log.info("session=%s %s", self.id, event.get("type"))

    async def run(self, seconds: float | None = None) -> PresenterStats:
        """Present until cancelled (or for ``seconds``); closes the sinks at the end."""
        self.pipeline.start()
        tasks = [
            asyncio.create_task(self._read_mic(), name="present-mic"),
            asyncio.create_task(self._pump_video(), name="present-video"),
            asyncio.create_task(self._pump_audio(), name="present-audio"),
        ]
        try:
            if seconds is None:
                await asyncio.gather(*tasks)
            else:
                done, _ = await asyncio.wait(
                    tasks, timeout=seconds, return_when=asyncio.FIRST_EXCEPTION
                )
                for task in done:
                    task.result()  # a failed task's error surfaces here
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.pipeline.close()
            self.video.stop()
            self.audio.stop()
            self.mic.close()
            for sink in (self.camera, self.speaker):
                if sink is not None:
                    sink.close()
        return self.stats

    async def _read_mic(self) -> None:
        async for chunk in self.mic.chunks():
            self.stats.mic_chunks += 1
            self.pipeline.push_mic(chunk)

    async def _pump_video(self) -> None:
        while True:
            frame = await self.video.recv()
            if self.camera is not None:
                # One conversion per frame, off the loop (it costs a few ms at 512 px).
                rgb = await asyncio.to_thread(_to_rgb, frame)
                self.camera.send(rgb)
            self.stats.frames += 1

    async def _pump_audio(self) -> None:
        while True:
            frame = await self.audio.recv()
            if self.speaker is not None:
                self.speaker.write(frame.to_ndarray().reshape(-1))
            self.stats.audio_frames += 1


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    return np.asarray(frame.to_ndarray(format="rgb24"))


# --- real devices (the ``present`` extra) ------------------------------------------------------


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
        self._stream.start()

    def _callback(self, data: np.ndarray, frames: int, time: Any, status: Any) -> None:
        self._loop.call_soon_threadsafe(self._put, data[:, 0].copy())

    def _put(self, chunk: np.ndarray) -> None:
        self._queue.put(chunk)

    async def chunks(self) -> AsyncIterator[np.ndarray]:
        """Chunks as they arrive."""
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
    (a blocking write there would hold back the frames released with the sound)."""

    def __init__(self, device: str) -> None:
        sd = _sounddevice()
        self._chunks: collections.deque[np.ndarray] = collections.deque(maxlen=SPEAKER_CHUNKS)
        self._lock = threading.Lock()
        self.underruns = 0
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

    def _callback(self, out: np.ndarray, frames: int, time: Any, status: Any) -> None:
        with self._lock:
            chunk = self._chunks.popleft() if self._chunks else None
        if chunk is None or len(chunk) != frames:
            self.underruns += chunk is None
            out.fill(0)
            if chunk is not None:
                out[: min(frames, len(chunk)), 0] = chunk[:frames]
            return
        out[:, 0] = chunk

    def write(self, samples: np.ndarray) -> None:
        """Queue 20 ms for the device (the oldest goes when it falls behind)."""
        with self._lock:
            self._chunks.append(np.asarray(samples, np.int16).reshape(-1))

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


def run_presenter(
    config: AppConfig,
    mic_device: str,
    speaker_device: str | None,
    vcam: bool,
    engine_name: str | None,
    avatar_name: str | None,
) -> int:
    """``server.py present``: run until Ctrl+C; the exit code. ``list`` as a device name
    prints the devices of that kind instead."""
    from rtc.services import Services  # heavy (engines): only for the command

    if mic_device == "list" or speaker_device == "list":
        kind = "input" if mic_device == "list" else "output"
        sys.stdout.write(f"{kind} devices:\n{list_audio_devices(kind)}\n")
        return 0
    names = [engine_name] if engine_name else None
    services = Services.load(config, names) if names else Services.load(config)
    engine = services.engine(engine_name)
    avatar = services.avatars.get(avatar_name)
    pool = BatcherPool.for_config(config)

    async def run() -> None:
        mic = SoundDeviceMic(mic_device)
        speaker = SoundDeviceSpeaker(speaker_device) if speaker_device else None
        camera = None
        if vcam:
            height, width = avatar.frames[0].image.shape[:2]
            camera = VirtualCamera(width, height)
        log.info(
            "presenting %s with %s: mic=%s vcam=%s speaker=%s (Ctrl+C stops)",
            avatar.name,
            engine.name,
            mic_device,
            vcam,
            speaker_device,
        )
        await Presenter(pool.get(engine), avatar, services.tts, mic, camera, speaker).run()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    finally:
        pool.close()
    return 0
