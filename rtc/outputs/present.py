"""Virtual presenter: the avatar follows a server-side microphone; no browser involved.

    python server.py present --mic DEVICE [--vcam] [--speaker DEVICE]

The microphone feeds the same pipeline a WebRTC caller's microphone does (echo on, so the voice
travels with the face); the session's media clock releases frame and voice together, and the
frames go to a virtual camera (pyvirtualcam), the voice to an output device (sounddevice), so
Zoom/Meet see and hear the avatar. Sources and sinks are small protocols, so tests run the whole
loop against fakes (and against PulseAudio null sinks, tests/test_present_pulse.py); the real
devices are imported only when asked for (the ``present`` extra).

The output device plays each 20 ms a little after it is written (its own buffer, PulseAudio's),
so the frames go to the camera that much after their release: face and voice leave the machine
together, which is what the meeting app receives.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import av
import numpy as np

from config import AppConfig
from inference.avatar.store import Avatar
from inference.frames import FPS
from inference.mel import mel_basis
from inference.tts import TextToSpeech
from rtc.live.batcher import Batcher, BatcherPool
from rtc.live.clock import MediaClock
from rtc.live.options import PipelineOptions
from rtc.live.pipeline import Event, Pipeline
from rtc.live.queues import DropOldestQueue
from rtc.outputs.audio_devices import VirtualCamera, list_audio_devices, open_audio
from rtc.webrtc.tracks import AvatarAudioTrack, AvatarVideoTrack

log = logging.getLogger(__name__)

MAX_FRAME_DELAY = 0.5
"""Seconds the camera's frames are held back at most, whatever a device reports."""


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

    @property
    def latency(self) -> float:
        """Seconds from :meth:`write` until the samples leave the device (0 for a fake)."""
        ...

    def write(self, samples: np.ndarray) -> None: ...

    def close(self) -> None: ...


@dataclass
class PresenterStats:
    """What the presenter did."""

    frames: int = 0
    """Video frames released by the clock."""
    camera_frames: int = 0
    """Frames the camera got (at the stop, the few still held back for the voice are not)."""
    audio_frames: int = 0
    mic_chunks: int = 0
    frame_delay: float = 0.0
    """Seconds the last frame was held back after its release, matching the speaker's latency."""


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
        # Released frames on their way to the camera; bounded by the longest delay allowed.
        self._delayed: DropOldestQueue[tuple[float, np.ndarray]] = DropOldestQueue(
            round(MAX_FRAME_DELAY * FPS) + 2
        )

    def _event(self, event: Event) -> None:
        self.events = [*self.events[-99:], event]  # bounded: the last 100
        log.info("session=%s %s", self.id, event.get("type"))

    async def run(self, seconds: float | None = None) -> PresenterStats:
        """Present until cancelled (or for ``seconds``); closes the sinks at the end."""
        # Built lazily by the first microphone window otherwise: a ~0.5 s stall of the loop
        # then, which skips frames and makes the audio track catch up in a burst.
        await asyncio.to_thread(mel_basis)
        self.pipeline.start()
        tasks = [
            asyncio.create_task(self._read_mic(), name="present-mic"),
            asyncio.create_task(self._pump_video(), name="present-video"),
            asyncio.create_task(self._send_video(), name="present-camera"),
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
            self._delayed.close()
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
            released = self.clock.now()
            if self.camera is not None:
                # One conversion per frame, off the loop (it costs a few ms at 512 px).
                rgb = await asyncio.to_thread(_to_rgb, frame)
                delay = self.frame_delay()
                self.stats.frame_delay = delay
                self._delayed.put((released + delay, rgb))
            self.stats.frames += 1

    def frame_delay(self) -> float:
        """Seconds a released frame waits for its voice to come out of the speaker."""
        if self.speaker is None:
            return 0.0
        return min(MAX_FRAME_DELAY, max(0.0, self.speaker.latency))

    async def _send_video(self) -> None:
        while True:
            item = await self._delayed.get()
            if item is None or self.camera is None:
                return
            due, rgb = item
            await self.clock.time.sleep_until(due)
            self.camera.send(rgb)
            self.stats.camera_frames += 1

    async def _pump_audio(self) -> None:
        while True:
            frame = await self.audio.recv()
            if self.speaker is not None:
                self.speaker.write(frame.to_ndarray().reshape(-1))
            self.stats.audio_frames += 1


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    return np.asarray(frame.to_ndarray(format="rgb24"))


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
        mic, speaker = await open_audio(mic_device, speaker_device)
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
        options = PipelineOptions(echo_mic=True, idle_motion=config.avatars.idle_motion)
        await Presenter(pool.get(engine), avatar, services.tts, mic, camera, speaker, options).run()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    finally:
        pool.close()
    return 0
