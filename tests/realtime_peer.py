"""Helpers of the realtime tests and bench: an in-process server and an aiortc test client.

The client behaves like a browser tab: it offers recvonly video, audio (recvonly, or
sendrecv with a fake microphone that sends 48 kHz stereo like a browser does) and a data
channel, and records every frame it receives with its arrival time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fractions
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
from aiohttp import web
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from config import AppConfig, HttpConfig, OutputConfig, RealtimeConfig
from inference.avatar.store import AvatarStore
from inference.engines.base import create_engine
from inference.engines.serial import SerialEngine
from inference.frames import Box
from inference.tts import TextToSpeech
from rtc.http.app import build_app
from rtc.outputs.whep import preferred_video_codecs
from rtc.services import Services
from rtc.webrtc.ice import rtc_configuration

MISSING_CHECKPOINT = (
    "no Wav2Lip {v} checkpoint: put Wav2Lip-SD-{v}.pt into checkpoints/ "
    "(test services load no Wav2Lip)"
)
MIC_RATE = 48_000
"""What browsers send."""


FOLLOWS_VOICE = 0.3
"""Correlation of mouth activity with the voice's envelope above which the mouth follows the
voice. The viseme photo mouth measures 0.41-0.46 here (H.264 / VP8, one test run alone) and
dips under 0.4 on a loaded machine; a mouth that does not follow (random Wav2Lip weights)
measures below 0.1 (bench/realtime.py)."""

STILL_HEAD: dict[str, Any] = {"idle_motion": False}
"""``realtime_services`` fields for tests that measure lip sync as the mouth box's change from
the idle face: a photo's head sway (tests/test_head_motion.py) moves the face under the box,
noise to that measure."""


def realtime_services(
    app_config: AppConfig, avatars: AvatarStore, tts: TextToSpeech, **fields: Any
) -> Services:
    """Services with only the viseme engine (both Wav2Lip engines report a missing file),
    serving on loopback ICE; ``fields`` go to the config section that has them (those of
    no other section to the avatars section, whose folders stay the tests' own)."""
    sections: dict[str, dict[str, Any]] = {
        "http": {},
        "realtime": {"ice_loopback": True},
        "outputs": {},
    }
    kinds = {"http": HttpConfig, "realtime": RealtimeConfig, "outputs": OutputConfig}
    avatar_fields: dict[str, Any] = {}
    for name, value in fields.items():
        where = next(
            (k for k, kind in kinds.items() if name in {f.name for f in dataclasses.fields(kind)}),
            None,
        )
        (avatar_fields if where is None else sections[where])[name] = value
    config = dataclasses.replace(
        app_config,
        avatars=dataclasses.replace(app_config.avatars, **avatar_fields),
        **{where: kinds[where](**values) for where, values in sections.items()},
    )
    services = Services(config=config, tts=tts, avatars=avatars, languages=tts.languages())
    services.engines["viseme"] = SerialEngine(create_engine("viseme"))
    services.unavailable["wav2lip-gan"] = MISSING_CHECKPOINT.format(v="GAN")
    services.unavailable["wav2lip-nogan"] = MISSING_CHECKPOINT.format(v="NOGAN")
    services.default_engine = "viseme"
    return services


async def abandoned_offer() -> dict[str, str]:
    """An offer (video recvonly) from a peer that is closed at once: the server can answer
    it, but nothing will ever answer its connectivity checks."""
    ghost = RTCPeerConnection(rtc_configuration([]))
    ghost.addTransceiver("video", direction="recvonly")
    await ghost.setLocalDescription(await ghost.createOffer())
    offer = {"sdp": ghost.localDescription.sdp, "type": "offer"}
    await ghost.close()
    return offer


@contextlib.asynccontextmanager
async def running_server(services: Services) -> Any:
    """The real application on 127.0.0.1 (a free port); yields its base URL."""
    app = build_app(services)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        await runner.cleanup()


class FakeMicrophone(MediaStreamTrack):
    """Plays ``pcm`` (16 kHz mono float32) as a browser microphone: 48 kHz stereo s16, 20 ms
    frames paced in real time, silence before ``start_delay`` and after the end."""

    kind = "audio"

    def __init__(self, pcm: np.ndarray, start_delay: float = 0.5) -> None:
        super().__init__()
        up = np.interp(np.arange(int(pcm.size * 3)) / 3.0, np.arange(pcm.size), pcm)
        lead = np.zeros(int(start_delay * MIC_RATE))
        self.samples = np.concatenate((lead, up)).astype(np.float32)
        self.start_delay = start_delay
        self._k = 0
        self._t0: float | None = None
        self.speech_started: float | None = None
        """Wall time (time.monotonic) the first speech sample was handed to aiortc."""

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._t0 is None:
            self._t0 = loop.time()
        due = self._t0 + self._k * 0.02
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        n = 960
        chunk = self.samples[self._k * n : (self._k + 1) * n]
        if chunk.size < n:
            chunk = np.concatenate((chunk, np.zeros(n - chunk.size, np.float32)))
        if self.speech_started is None and self._k * 0.02 >= self.start_delay:
            self.speech_started = time.monotonic()
        s16 = (np.clip(chunk, -1, 1) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(s16, 2).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = MIC_RATE
        frame.pts = self._k * n
        frame.time_base = fractions.Fraction(1, MIC_RATE)
        self._k += 1
        return frame


@dataclass
class Received:
    """Everything one client got, with arrival times (time.monotonic)."""

    video_times: list[float] = field(default_factory=list)
    video_pts: list[int] = field(default_factory=list)
    mouth: list[np.ndarray] = field(default_factory=list)
    """The mouth box of each received frame (luma crops, uint8 (h, w))."""
    audio_times: list[float] = field(default_factory=list)
    audio_pts: list[int] = field(default_factory=list)
    audio: list[np.ndarray] = field(default_factory=list)
    """Mono float32 48 kHz samples of each received audio frame."""
    events: list[dict[str, Any]] = field(default_factory=list)


class TestClient:
    """An aiortc peer acting like the realtime page."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        base_url: str,
        mouth_box: Box | None = None,
        microphone: MediaStreamTrack | None = None,
        video_codec: str | None = None,
    ) -> None:
        self.base_url = base_url
        self.video_codec = video_codec
        """Mime type offered first (e.g. "video/H264"); None keeps aiortc's order (VP8)."""
        self.pc = RTCPeerConnection(rtc_configuration([]))
        self.mouth_box = mouth_box
        self.microphone = microphone
        self.received = Received()
        self.session_id: str | None = None
        self.stream: str | None = None
        """The stream name the answer gave (viewers use it; not the session id)."""
        self.channel = self.pc.createDataChannel("control")
        self.channel_open = asyncio.Event()
        self.channel.on("open", self.channel_open.set)
        self.channel.on("message", self._on_message)
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None

    def _on_message(self, message: object) -> None:
        if isinstance(message, str):
            self.received.events.append(json.loads(message))

    async def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def connect(self, path: str = "/offer", **body: Any) -> dict[str, Any]:
        """Negotiate; returns the answer JSON (raises AssertionError on an HTTP error)."""
        video = self.pc.addTransceiver("video", direction="recvonly")
        if self.video_codec is not None:
            video.setCodecPreferences(preferred_video_codecs(self.video_codec))
        if self.microphone is not None:
            self.pc.addTransceiver(self.microphone, direction="sendrecv")
        else:
            self.pc.addTransceiver("audio", direction="recvonly")

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            record = self._record_video if track.kind == "video" else self._record_audio
            self._tasks.append(asyncio.create_task(record(track)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription
        http = await self.http()
        async with http.post(
            self.base_url + path, json={"sdp": offer.sdp, "type": offer.type, **body}
        ) as resp:
            answer = await resp.json()
            assert resp.status == 200, answer
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        self.session_id = answer["session_id"]
        self.stream = answer.get("stream")
        return answer

    async def _record_video(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = time.monotonic()
                assert isinstance(frame, av.VideoFrame)
                # Luma is enough to see the mouth move and costs a copy, not a conversion
                # (this client may run many sessions on the machine it measures).
                image = frame.to_ndarray(format="yuv420p")[: frame.height]
                box = self.mouth_box
                crop = image if box is None else image[box.y1 : box.y2, box.x1 : box.x2]
                self.received.video_times.append(now)
                self.received.video_pts.append(int(frame.pts or 0))
                self.received.mouth.append(crop.copy())

    async def _record_audio(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = time.monotonic()
                assert isinstance(frame, av.AudioFrame)
                data = frame.to_ndarray().astype(np.float32) / 32768.0
                channels = len(frame.layout.channels)
                mono = data.reshape(-1, channels).mean(axis=1)
                self.received.audio_times.append(now)
                self.received.audio_pts.append(int(frame.pts or 0))
                self.received.audio.append(mono)

    async def post(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        http = await self.http()
        async with http.post(
            f"{self.base_url}/api/sessions/{self.session_id}{path}", json=body or {}
        ) as resp:
            return resp.status, await resp.json()

    async def state(self) -> dict[str, Any]:
        http = await self.http()
        async with http.get(f"{self.base_url}/api/sessions/{self.session_id}") as resp:
            return await resp.json()

    async def wait_for_frames(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received.video_times) < count:
            assert time.monotonic() < deadline, "no video arrived"
            await asyncio.sleep(0.02)

    async def wait_event(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.received.events:
                if event.get("type") == kind:
                    return event
            assert time.monotonic() < deadline, f"no {kind} event"
            await asyncio.sleep(0.01)

    async def close(self, delete: bool = True) -> None:
        if delete and self.session_id is not None:
            http = await self.http()
            async with http.delete(f"{self.base_url}/api/sessions/{self.session_id}"):
                pass
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()


# --- measuring what a viewer sees ------------------------------------------------------------


def mouth_activity(received: Received, reference: np.ndarray | None = None) -> np.ndarray:
    """Per received frame: mean absolute difference of the mouth box from ``reference``
    (default: the median of the first 5 frames, which show the idle face)."""
    crops = np.stack(received.mouth).astype(np.float32)
    ref = np.median(crops[:5], axis=0) if reference is None else reference.astype(np.float32)
    return np.abs(crops - ref).reshape(len(crops), -1).mean(axis=1)


def audio_envelope(received: Received) -> np.ndarray:
    """RMS of each received 20 ms audio frame."""
    return np.array([float(np.sqrt(np.mean(np.square(a)))) for a in received.audio])


def viewer_timelines(
    received: Received, video_first_slot: int, audio_first_slot: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each received frame's release time on the session clock (seconds after t0).

    A browser lines the tracks up by the sender's clock (RTCP sender reports); this does the
    same from the pts aiortc's receiver reports (RTP timestamps counted from the first packet)
    and the slot of the first frame each server track sent. Receiver buffering, which differs
    between the tracks (audio jitter-buffer prefetch vs. video frame completion), is thereby
    left out exactly as a browser leaves it out.
    """
    tv = video_first_slot * 0.04 + np.asarray(received.video_pts, np.float64) / 90_000
    ta = audio_first_slot * 0.02 + np.asarray(received.audio_pts, np.float64) / 48_000
    return tv, ta


def cross_correlation_lag(
    tv: np.ndarray,
    video: np.ndarray,
    ta: np.ndarray,
    audio: np.ndarray,
    start: float,
    stop: float,
    max_lag: float = 0.2,
    step: float = 0.005,
) -> tuple[float, float]:
    """Lag (seconds; > 0: the video is late) maximising the normalised cross-correlation of
    the two signals over [start, stop], and that correlation."""
    grid = np.arange(start, stop, step)
    a = np.interp(grid, ta + 0.01, audio)  # an audio frame's energy belongs to its middle
    a = (a - a.mean()) / (a.std() + 1e-9)
    best = (0.0, -2.0)
    for lag in np.arange(-max_lag, max_lag + step / 2, step):
        v = np.interp(grid + lag, tv + 0.02, video)  # likewise for a 40 ms video frame
        v = (v - v.mean()) / (v.std() + 1e-9)
        corr = float(np.mean(a * v))
        if corr > best[1]:
            best = (float(lag), corr)
    return best
