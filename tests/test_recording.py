"""Recording a live stream: the file is in sync by content, and failures stop only the recording.

A controller speaks over real loopback WebRTC while the stream is recorded; the downloaded
MP4 is decoded and the mouth activity of its frames is cross-correlated with its audio.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import av
import numpy as np
import pytest

from config import AppConfig
from inference.avatar.store import AvatarStore
from inference.frames import Box
from inference.mp4 import Mp4Writer
from inference.tts import TextToSpeech
from rtc.outputs.recorder import RecordingLimits, mp4_writer
from rtc.outputs.recording import RECORDINGS_KEY, recording_path
from rtc.services import Services
from rtc.webrtc.encoding import H264
from rtc.webrtc.signalling import REALTIME_KEY
from tests.realtime_peer import (
    FOLLOWS_VOICE,
    STILL_HEAD,
    TestClient,
    cross_correlation_lag,
    realtime_services,
    running_server,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("loopback_ice")]

TEXT = "Папа купил большую карту мира. Мама мыла раму."


@pytest.fixture
def services(
    app_config: AppConfig, avatar_store: AvatarStore, espeak_tts: TextToSpeech, tmp_path: Path
) -> Services:
    return realtime_services(
        app_config, avatar_store, espeak_tts, recordings_dir=tmp_path / "recordings", **STILL_HEAD
    )


async def api(http: aiohttp.ClientSession, method: str, url: str) -> tuple[int, Any]:
    async with http.request(method, url) as resp:
        return resp.status, await resp.json()


def decode(path: Path, box: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Video frame times and mouth crops, 20 ms audio frame times and RMS, from the file."""
    tv, mouths, audio = [], [], []
    first_audio: float | None = None
    with av.open(str(path)) as container:
        for picture in container.decode(video=0):
            tv.append(float(picture.time or 0.0))
            luma = np.asarray(picture.to_ndarray(format="gray"), np.float32)
            mouths.append(luma[box.y1 : box.y2, box.x1 : box.x2])
    with av.open(str(path)) as container:
        for sound in container.decode(audio=0):
            if first_audio is None:
                first_audio = float(sound.time or 0.0)
            audio.append(sound.to_ndarray().reshape(-1))
    pcm = np.concatenate(audio).astype(np.float32)
    n = pcm.size // 320
    rms = np.sqrt(np.mean(pcm[: n * 320].reshape(n, 320) ** 2, axis=1))
    ta = (first_audio or 0.0) + np.arange(n) * 0.02
    crops = np.stack(mouths)
    reference = np.median(crops[:5], axis=0)
    activity = np.abs(crops - reference).reshape(len(crops), -1).mean(axis=1)
    return np.asarray(tv), activity, ta, rms


async def test_recording_of_speech_is_in_sync_and_downloadable(
    services: Services, avatar_store: AvatarStore
) -> None:
    box = avatar_store.get("astronaut").frames[0].box
    async with running_server(services) as (url, _), aiohttp.ClientSession() as http:
        client = TestClient(url)
        try:
            answer = await client.connect(avatar="astronaut", language="ru")
            stream = answer["stream"]
            await client.wait_for_frames(5)
            status, started = await api(http, "POST", f"{url}/api/streams/{stream}/recording/start")
            assert status == 201, started
            status, _ = await api(http, "POST", f"{url}/api/streams/{stream}/recording/start")
            assert status == 409
            await client.wait_for_frames(len(client.received.video_times) + 8)
            status, _ = await client.post("/say", {"text": TEXT})
            assert status == 202
            await client.wait_event("speaking_ended", timeout=30)
            await client.wait_for_frames(len(client.received.video_times) + 10)
            status, stopped = await api(http, "POST", f"{url}/api/streams/{stream}/recording/stop")
            assert status == 200 and stopped["error"] is None, stopped
            name = stopped["recording"]
            status, listing = await api(http, "GET", f"{url}/api/recordings")
            assert [r["name"] for r in listing["recordings"]] == [name]
            async with http.get(f"{url}/api/recordings/{name}") as resp:
                assert resp.status == 200
                data = await resp.read()
            for bad in ("..%2Fsecret.mp4", "x.txt", ".hidden"):
                async with http.get(f"{url}/api/recordings/{bad}") as resp:
                    assert resp.status in (400, 404), bad
        finally:
            await client.close()
    path = services.config.outputs.recordings_dir / "downloaded.mp4"
    path.write_bytes(data)
    tv, activity, ta, rms = decode(path, box)
    # The file covers `frames` slots; a slot the server skipped (a stalled loop on a loaded
    # machine) is a gap in the timestamps, the picture before it held, not a frame. (Gaps are
    # counted from the second frame on: the first is stamped 0, the rest from its slot.)
    gaps = int(sum(max(0, round(d * 25) - 1) for d in np.diff(tv[1:])))
    assert len(tv) + gaps == stopped["frames"] and len(tv) > 50
    assert abs((ta[-1] + 0.02) - (tv[-1] + 0.04)) < 0.2  # both cover the same time
    speech = ta[rms > 0.02]
    assert speech.size > 25, "no speech in the file"
    assert activity.max() > 5 * (np.median(activity[:5]) + 1)  # the mouth moved
    lag, corr = cross_correlation_lag(tv, activity, ta, rms, speech[0] - 0.3, speech[-1] + 0.3)
    assert corr > FOLLOWS_VOICE and abs(lag) <= 0.040, (lag, corr)


class FullDisk:
    """A writer whose disk fills up after a few frames."""

    def __init__(self, path: Path, width: int, height: int) -> None:
        self.frames = 0

    def write_packet(self, data: bytes, index: int, keyframe: bool) -> None:
        self.frames += 1
        if self.frames > 5:
            raise OSError(28, "No space left on device")

    def write_audio(self, pcm: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass


async def wait_stopped(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        status, body = await api(http, "GET", url)
        assert status == 200 and isinstance(body, dict)
        if not body["active"]:
            return body
        assert time.monotonic() < deadline, "the recording did not stop"
        await asyncio.sleep(0.05)


async def disk_errors(http: aiohttp.ClientSession, url: str) -> float:
    """avatar_errors_total{kind="disk"} as GET /metrics reports it."""
    async with http.get(f"{url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith('avatar_errors_total{kind="disk"}'):
            return float(line.split()[-1])
    raise AssertionError("no disk errors series in /metrics")


async def test_disk_full_and_limits_stop_the_recording_not_the_session(services: Services) -> None:
    async with running_server(services) as (url, app), aiohttp.ClientSession() as http:
        client = TestClient(url)
        try:
            answer = await client.connect()
            stream = answer["stream"]
            await client.wait_for_frames(3)
            recordings = app[RECORDINGS_KEY]
            recordings.writer_factory = FullDisk
            assert await disk_errors(http, url) == 0
            status, _ = await api(http, "POST", f"{url}/api/streams/{stream}/recording/start")
            assert status == 201
            failed = await wait_stopped(http, f"{url}/api/streams/{stream}/recording")
            assert failed["stop_reason"] == "error" and "No space" in str(failed["error"])
            # The failure reached the metrics' error hook like other components' errors.
            assert await disk_errors(http, url) == 1
            error = await client.wait_event("recording_error")
            assert error["cause"] == "disk" and error["session"] == client.session_id
            status, state = await api(http, "GET", f"{url}/api/sessions/{client.session_id}")
            assert status == 200 and state["connection"] == "connected"
            frames = len(client.received.video_times)
            await client.wait_for_frames(frames + 5)  # still streaming

            # A duration limit stops a real recording by itself, with a complete file.
            recordings.writer_factory = mp4_writer
            recordings.limits = RecordingLimits(max_seconds=0.4)
            status, _ = await api(http, "POST", f"{url}/api/streams/{stream}/recording/start")
            assert status == 201
            limited = await wait_stopped(http, f"{url}/api/streams/{stream}/recording")
            assert limited["stop_reason"] == "max_seconds" and limited["frames"] == 10
            path = recording_path(services.config.outputs.recordings_dir, str(limited["recording"]))
            with av.open(str(path)) as container:
                assert sum(1 for _ in container.decode(video=0)) == 10
        finally:
            await client.close()


class Capture:
    """A writer that keeps what the recorder hands it."""

    packets: ClassVar[list[tuple[bytes, int, bool]]] = []
    size: ClassVar[tuple[int, int]] = (0, 0)

    def __init__(self, path: Path, width: int, height: int) -> None:
        Capture.size = (width, height)
        Capture.packets = []

    def write_packet(self, data: bytes, index: int, keyframe: bool) -> None:
        Capture.packets.append((data, index, keyframe))

    def write_audio(self, pcm: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass


async def test_recorder_muxes_the_streams_own_packets(services: Services) -> None:
    """No second encode: the file's video is the stream's shared H.264 encoder's packets,
    byte for byte what another receiver of that codec gets, starting at a keyframe."""
    async with running_server(services) as (url, app), aiohttp.ClientSession() as http:
        client = TestClient(url, video_codec=H264)
        try:
            answer = await client.connect()
            stream = answer["stream"]
            await client.wait_for_frames(3)
            media = app[REALTIME_KEY].streams.get(stream).media
            spy = media.video_receiver(H264, "spy")
            seen: list[bytes] = []

            async def watch() -> None:
                while (packet := await spy.get()) is not None:
                    seen.append(bytes(packet))

            watcher = asyncio.create_task(watch())
            recordings = app[RECORDINGS_KEY]
            recordings.writer_factory = Capture
            recordings.limits = RecordingLimits(max_seconds=0.4)
            status, _ = await api(http, "POST", f"{url}/api/streams/{stream}/recording/start")
            assert status == 201
            assert list(media.groups) == [H264]  # the session's codec: one encoder for all
            await wait_stopped(http, f"{url}/api/streams/{stream}/recording")
            media.remove(spy)
            await asyncio.wait_for(watcher, 5)
        finally:
            await client.close()
    avatar = services.avatars.get(None).frames[0].image
    assert Capture.size == (avatar.shape[1], avatar.shape[0])
    assert len(Capture.packets) >= 8 and Capture.packets[0][1:] == (0, True)
    written = [data for data, _, _ in Capture.packets]
    start = seen.index(written[0])
    assert seen[start : start + len(written)] == written
    indices = [index for _, index, _ in Capture.packets]
    assert indices == sorted(set(indices))  # each slot once, in order (a skipped one is a gap)


def test_mp4_writer_takes_i420_as_is(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    y = np.tile(np.linspace(16, 235, 64, dtype=np.uint8), (48, 1))
    chroma = rng.integers(100, 150, (24, 64), dtype=np.uint8)
    yuv = np.vstack([y, chroma]).astype(np.uint8)
    path = tmp_path / "i420.mp4"
    with Mp4Writer(path, 64, 48, crf=0) as writer:
        for _ in range(3):
            writer.write_i420(yuv)
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]
    assert len(decoded) == 3
    assert np.abs(decoded[0][:48].astype(int) - y).max() <= 1
