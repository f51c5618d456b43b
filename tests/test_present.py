"""The virtual presenter against fake devices: a fake microphone speaks, the mouth moves on the
fake camera and the voice reaches the fake speaker. Real audio devices (a PulseAudio server of
its own) are tests/test_present_pulse.py's."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from inference.avatar.store import AvatarStore
from inference.engines.base import create_engine
from inference.tts import TextToSpeech
from rtc.live.batcher import BatcherPool
from rtc.outputs.audio_devices import DeviceError, SoundDeviceMic, VirtualCamera
from rtc.outputs.present import Presenter

pytestmark = pytest.mark.timeout(60)


class FakeMic:
    """Plays ``pcm`` in 20 ms chunks in real time after ``lead`` seconds of silence."""

    def __init__(self, pcm: np.ndarray, lead: float = 0.4) -> None:
        self.pcm = np.concatenate((np.zeros(int(lead * 16000), np.float32), pcm))
        self.closed = False

    async def chunks(self) -> AsyncIterator[np.ndarray]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        k = 0
        while True:
            await asyncio.sleep(max(0.0, t0 + k * 0.02 - loop.time()))
            chunk = self.pcm[k * 320 : (k + 1) * 320]
            yield chunk if chunk.size == 320 else np.zeros(320, np.float32)
            k += 1

    def close(self) -> None:
        self.closed = True


class FakeCamera:
    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.closed = False

    def send(self, rgb: np.ndarray) -> None:
        self.frames.append(rgb)

    def close(self) -> None:
        self.closed = True


class FakeSpeaker:
    latency = 0.06
    """What a device would report: the presenter holds the frames back this long."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.closed = False

    def write(self, samples: np.ndarray) -> None:
        self.chunks.append(samples.copy())

    def close(self) -> None:
        self.closed = True


async def test_present_moves_the_mouth_with_the_microphone(
    avatar_store: AvatarStore, espeak_tts: TextToSpeech
) -> None:
    voice = espeak_tts.synthesize("Раз, два, три. Папа, мама.", "ru").pcm
    avatar = avatar_store.get("astronaut")
    pool = BatcherPool(max_batch=8, feather=True)
    mic, camera, speaker = FakeMic(voice), FakeCamera(), FakeSpeaker()
    try:
        presenter = Presenter(
            pool.get(create_engine("viseme")), avatar, espeak_tts, mic, camera, speaker
        )
        stats = await presenter.run(seconds=0.4 + voice.size / 16000 + 0.8)
    finally:
        await asyncio.to_thread(pool.close)
    assert mic.closed and camera.closed and speaker.closed
    assert stats.frame_delay == speaker.latency
    assert stats.mic_chunks > 0 and stats.camera_frames == len(camera.frames) > 25
    # Every released frame reached the camera but the last one or two, still held back.
    assert 0 <= stats.frames - stats.camera_frames <= round(speaker.latency * 25) + 1
    height, width = avatar.frames[0].image.shape[:2]
    assert camera.frames[0].shape == (height, width, 3)
    box = avatar.frames[0].box
    mouths = np.stack(
        [f[box.y1 : box.y2, box.x1 : box.x2].astype(np.float32).mean(axis=2) for f in camera.frames]
    )
    activity = np.abs(mouths - np.median(mouths[:5], axis=0)).reshape(len(mouths), -1).mean(1)
    assert activity.max() > 5 * (np.median(activity[:5]) + 1), "the mouth did not move"
    # The voice is sent on with the face (echo): it reaches the speaker.
    rms = [float(np.sqrt(np.mean((c.astype(np.float32) / 32768) ** 2))) for c in speaker.chunks]
    assert max(rms) > 0.02


@pytest.fixture
def without_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the 'present' extra were not installed, even where it is (CI installs it for
    tests/test_present_pulse.py): a None in sys.modules makes the import fail."""
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    monkeypatch.setitem(sys.modules, "pyvirtualcam", None)


@pytest.mark.usefixtures("without_extra")
async def test_missing_devices_and_extras_give_clear_errors() -> None:
    with pytest.raises(DeviceError, match="present"):
        SoundDeviceMic("default")
    with pytest.raises(DeviceError, match=r"pyvirtualcam|virtual camera"):
        VirtualCamera(512, 512)


@pytest.mark.usefixtures("without_extra")
def test_present_command_reports_the_missing_extra(caplog: pytest.LogCaptureFixture) -> None:
    from server import main

    assert main(["present", "--mic", "list"]) == 2
    assert "sounddevice" in caplog.text


class StubStream:
    """Stands in for sounddevice.OutputStream: keeps the callback PortAudio would call."""

    def __init__(self, callback: Any = None, **_: Any) -> None:
        self.callback = callback

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_speaker_never_blocks_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """``write`` only queues (a blocking device write on the event loop held back the frames
    released with the sound); PortAudio's callback drains it, silence when it runs dry."""
    import types

    from rtc.outputs import audio_devices as present

    stub = types.SimpleNamespace(
        OutputStream=StubStream, check_output_settings=lambda **_: None, query_devices=list
    )
    monkeypatch.setattr(present, "_sounddevice", lambda: stub)
    speaker = present.SoundDeviceSpeaker("default")
    stream = speaker._stream
    for k in range(present.SPEAKER_CHUNKS + 5):  # more than it holds: never waits
        speaker.write(np.full(320, k, np.int16))
    out = np.empty((320, 1), np.int16)
    # PortAudio's timing: this buffer reaches the output 50 ms after the callback.
    info = types.SimpleNamespace(currentTime=10.0, outputBufferDacTime=10.05)
    stream.callback(out, 320, info, None)
    assert out[0, 0] == 5 and speaker.dropped == 5  # the oldest went when it fell behind
    for _ in range(present.SPEAKER_CHUNKS):
        stream.callback(out, 320, info, None)
    assert not out.any() and speaker.underruns == 1  # ran dry: silence, counted
    # Its latency: the wait in the buffer (a moment here) plus what PortAudio holds ahead.
    assert 0.05 <= speaker.latency < 0.06


def test_the_speaker_plays_once_the_device_keeps_pace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A few callbacks and then a stall (PulseAudio's stream starting) is not playing yet;
    callbacks at the device's pace for STEADY_S are."""
    import types

    from rtc.outputs import audio_devices as present

    stub = types.SimpleNamespace(
        OutputStream=StubStream, check_output_settings=lambda **_: None, query_devices=list
    )
    monkeypatch.setattr(present, "_sounddevice", lambda: stub)
    now = [100.0]
    monkeypatch.setattr(present.time, "monotonic", lambda: now[0])
    speaker = present.SoundDeviceSpeaker("default")
    info = types.SimpleNamespace(currentTime=0.0, outputBufferDacTime=0.04)
    out = np.empty((320, 1), np.int16)
    for _ in range(3):  # the start-up prefill, back to back
        speaker._stream.callback(out, 320, info, None)
    now[0] += 1.5  # the stall
    for _ in range(round(present.STEADY_S / 0.02)):
        assert not speaker.playing.is_set()
        speaker._stream.callback(out, 320, info, None)
        now[0] += 0.02
    now[0] += 1e-6  # past STEADY_S whatever the float sums
    speaker._stream.callback(out, 320, info, None)
    assert speaker.playing.is_set()
