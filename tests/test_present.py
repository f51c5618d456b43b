"""The virtual presenter against fake devices: a fake microphone speaks, the mouth moves on the
fake camera and the voice reaches the fake speaker. Real devices are not available here."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from inference.avatar.store import AvatarStore
from inference.engines.base import create_engine
from inference.tts import TextToSpeech
from rtc.live.batcher import BatcherPool
from rtc.outputs.present import DeviceError, Presenter, SoundDeviceMic, VirtualCamera

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
    assert stats.mic_chunks > 0 and stats.frames == len(camera.frames) > 25
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


def require_no_extra() -> None:
    if importlib.util.find_spec("sounddevice") or importlib.util.find_spec("pyvirtualcam"):
        pytest.skip("the 'present' extra is installed: this checks the error without it")


async def test_missing_devices_and_extras_give_clear_errors() -> None:
    require_no_extra()
    with pytest.raises(DeviceError, match="present"):
        SoundDeviceMic("default")
    with pytest.raises(DeviceError, match=r"pyvirtualcam|virtual camera"):
        VirtualCamera(512, 512)


def test_present_command_reports_the_missing_extra(caplog: pytest.LogCaptureFixture) -> None:
    from server import main

    require_no_extra()
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

    from rtc.outputs import present

    stub = types.SimpleNamespace(
        OutputStream=StubStream, check_output_settings=lambda **_: None, query_devices=list
    )
    monkeypatch.setattr(present, "_sounddevice", lambda: stub)
    speaker = present.SoundDeviceSpeaker("default")
    stream = speaker._stream
    for k in range(present.SPEAKER_CHUNKS + 5):  # more than it holds: never waits
        speaker.write(np.full(320, k, np.int16))
    out = np.empty((320, 1), np.int16)
    stream.callback(out, 320, None, None)
    assert out[0, 0] == 5  # the oldest went when it fell behind
    for _ in range(present.SPEAKER_CHUNKS):
        stream.callback(out, 320, None, None)
    assert not out.any() and speaker.underruns == 1  # ran dry: silence, counted
