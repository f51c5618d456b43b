"""Every limit answers a clear 4xx/503 JSON error and leaves the server healthy.

Limits of the HTTP API: body size (aiohttp's client_max_size, also for chunked bodies), JSON
body size, text length, upload size and duration, renders waiting (503 + Retry-After, also
when clients disconnect mid-render), SDP size. Realtime limits (sessions, queued utterances)
use a real loopback peer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCPeerConnection

from config import AppConfig, HttpConfig, RealtimeConfig, TtsConfig
from inference.avatar.store import AvatarStore
from inference.render import RenderStats
from inference.tts import TextToSpeech
from rtc.http.app import build_app
from rtc.http.generate import Generator, Render
from rtc.services import Services
from rtc.webrtc.ice import rtc_configuration
from tests.media import encode_audio, tone
from tests.realtime_peer import TestClient as PeerClient
from tests.realtime_peer import realtime_services, running_server

pytestmark = pytest.mark.timeout(90)

UPLOAD_LIMIT = 64_000
JSON_LIMIT = 8_000
TEXT_LIMIT = 200


def _limited(services: Services, **http: Any) -> Services:
    values = (
        dict(
            max_upload_bytes=UPLOAD_LIMIT,
            max_upload_seconds=2.0,
            max_json_bytes=JSON_LIMIT,
        )
        | http
    )
    config = dataclasses.replace(
        services.config,
        http=HttpConfig(**values),
        realtime=RealtimeConfig(ice_loopback=True),
        tts=TtsConfig(max_text_chars=TEXT_LIMIT),
    )
    return dataclasses.replace(services, config=config)


@pytest.fixture
async def client(loaded_services: Services) -> AsyncIterator[TestClient]:
    app = build_app(_limited(loaded_services))
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


async def expect_error(response: aiohttp.ClientResponse, status: int, *needles: str) -> str:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert isinstance(body["error"], str)
    for needle in needles:
        assert needle in body["error"], body["error"]
    return str(body["error"])


async def expect_healthy(client: TestClient) -> None:
    r = await client.get("/healthz")
    assert r.status == 200 and await r.json() == {"status": "ok"}


def _upload(audio: bytes) -> aiohttp.FormData:
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("audio", audio, filename="speech.wav", content_type="audio/wav")
    return form


async def test_body_size_limit_also_holds_for_chunked_bodies(client: TestClient) -> None:
    # No Content-Length: only aiohttp's client_max_size (upload limit + 64 KiB) stops it.
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"text": "'
        for _ in range(20):
            yield b"a" * 10_000
        yield b'"}'

    r = await client.post(
        "/api/generate", data=chunks(), headers={"Content-Type": "application/json"}
    )
    await expect_error(r, 413, "too large")
    await expect_healthy(client)


async def test_json_bodies_are_refused_by_declared_size(client: TestClient) -> None:
    body = json.dumps({"text": "a" * (JSON_LIMIT + 10)})
    for path in ("/api/generate", "/offer", "/api/sessions/any/say"):
        r = await client.post(path, data=body, headers={"Content-Type": "application/json"})
        await expect_error(r, 413, "too large", str(JSON_LIMIT))
    await expect_healthy(client)


async def test_chunked_json_bodies_are_held_to_the_json_limit(client: TestClient) -> None:
    # Under client_max_size (the upload limit) but over max_json_bytes, with no
    # Content-Length to refuse it by: the JSON reader must count while it reads.
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"text": "'
        for _ in range(4):
            yield b"a" * (JSON_LIMIT // 2)
        yield b'"}'

    for path in ("/api/generate", "/offer"):
        r = await client.post(path, data=chunks(), headers={"Content-Type": "application/json"})
        assert "Content-Length" not in r.request_info.headers
        await expect_error(r, 413, "too large", str(JSON_LIMIT))
    await expect_healthy(client)


async def test_text_length_limit(client: TestClient) -> None:
    r = await client.post("/api/generate", json={"text": "а" * (TEXT_LIMIT + 1)})
    await expect_error(r, 400, f"{TEXT_LIMIT + 1} characters", f"limit is {TEXT_LIMIT}")
    r = await client.get("/api/languages")
    assert (await r.json())["max_text_chars"] == TEXT_LIMIT  # the pages learn the limit
    await expect_healthy(client)


async def test_upload_size_and_duration_limits(client: TestClient, tmp_path: Any) -> None:
    r = await client.post("/api/generate", data=_upload(b"\x00" * (UPLOAD_LIMIT + 1)))
    await expect_error(r, 413, "larger than the limit")
    long_wav = encode_audio(
        tmp_path / "long.wav", tone(200.0, 3.0, 8_000), 8_000, "pcm_s16le", "wav"
    ).read_bytes()
    assert len(long_wav) < UPLOAD_LIMIT
    r = await client.post("/api/generate", data=_upload(long_wav))
    await expect_error(r, 400, "longer than the limit of 2 s")
    await expect_healthy(client)


async def test_sdp_size_limit(loaded_services: Services) -> None:
    sdp = "v=0\r\n" + "a=x\r\n" * 14_000  # 70 kB: over the SDP limit, under the JSON one
    app = build_app(_limited(loaded_services, max_json_bytes=1 << 20))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        r = await client.post("/offer", json={"sdp": sdp, "type": "offer"})
        await expect_error(r, 413, "'sdp' is larger")
        await expect_healthy(client)


# --- renders waiting ---------------------------------------------------------------------


class Gate:
    """Holds fake renders until opened; counts the ones running."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.running = 0
        self.started = threading.Semaphore(0)

    def render(self, _render: Render) -> tuple[bytes, RenderStats]:
        """Stands in for Generator._render_bytes (a bound method of the gate, not the
        generator)."""
        self.running += 1
        self.started.release()
        try:
            assert self.open.wait(20), "the test never opened the gate"
        finally:
            self.running -= 1
        return b"mp4", RenderStats(frames=1, duration=0.04, lipsync=0.0, encode=0.0)


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    gate = Gate()
    monkeypatch.setattr(Generator, "_render_bytes", gate.render)
    yield gate
    gate.open.set()


def _generator(app: web.Application) -> Generator:
    for route in app.router.routes():
        if route.resource is not None and route.resource.canonical == "/api/generate":
            owner = getattr(route.handler, "__self__", None)
            assert isinstance(owner, Generator)
            return owner
    raise AssertionError("no /api/generate route")


async def _until(condition: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_renders_waiting_limit_is_503_with_retry_after(
    loaded_services: Services, gate: Gate
) -> None:
    app = build_app(_limited(loaded_services, max_parallel_renders=1, max_waiting_renders=1))
    generator = _generator(app)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        body = {"text": "Привет."}
        first = asyncio.create_task(client.post("/api/generate", json=body))
        await asyncio.to_thread(gate.started.acquire, True, 10)
        second = asyncio.create_task(client.post("/api/generate", json=body))
        await _until(lambda: generator.slots.waiting == 1)
        r = await client.post("/api/generate", json=body)
        await expect_error(r, 503, "too many renders queued")
        assert int(r.headers["Retry-After"]) > 0
        await expect_healthy(client)
        gate.open.set()
        for task in (first, second):
            response = await task
            assert response.status == 200 and await response.read() == b"mp4"


async def test_a_client_leaving_mid_render_does_not_free_its_slot(
    loaded_services: Services, gate: Gate
) -> None:
    app = build_app(_limited(loaded_services, max_parallel_renders=1, max_waiting_renders=0))
    # With handler cancellation on, a client hanging up cancels its handler mid-render.
    server = TestServer(app, host="127.0.0.1", handler_cancellation=True)
    async with TestClient(server) as client:
        url = str(client.make_url("/api/generate"))
        async with aiohttp.ClientSession() as other:
            leaving = asyncio.create_task(other.post(url, json={"text": "Привет."}))
            await asyncio.to_thread(gate.started.acquire, True, 10)
            leaving.cancel()  # the client hangs up while its render runs
            await asyncio.gather(leaving, return_exceptions=True)
        await asyncio.sleep(0.05)  # let the server notice the closed connection
        assert gate.running == 1
        r = await client.post("/api/generate", json={"text": "Ещё."})
        await expect_error(r, 503, "too many renders queued")  # the slot is still taken
        gate.open.set()
        await _until(lambda: gate.running == 0)
        r = await client.post("/api/generate", json={"text": "Ещё."})
        assert r.status == 200  # the finished render gave its slot back


async def test_server_answers_normally_after_every_limit(client: TestClient) -> None:
    for _ in range(2):
        await client.post("/api/generate", json={"text": "x" * (TEXT_LIMIT + 5)})
        await client.post("/api/generate", data=_upload(b"\x00" * (UPLOAD_LIMIT + 1)))
    r = await client.post("/api/generate", json={"text": "Привет.", "language": "ru"})
    assert r.status == 200 and r.content_type == "video/mp4"
    assert len(await r.read()) > 1000
    assert np.isfinite(float(r.headers["X-Video-Duration"]))


# --- realtime: sessions and queued utterances ----------------------------------------------


async def test_sessions_and_queued_utterances_limits(
    loopback_ice: None, app_config: AppConfig, avatar_store: AvatarStore, espeak_tts: TextToSpeech
) -> None:
    services = realtime_services(
        app_config, avatar_store, espeak_tts, max_sessions=1, max_queued_utterances=2
    )
    async with running_server(services) as (url, _):
        first = PeerClient(url)
        try:
            await first.connect()
            await first.wait_for_frames(2)
            second = RTCPeerConnection(rtc_configuration([]))
            second.addTransceiver("video", direction="recvonly")
            await second.setLocalDescription(await second.createOffer())
            offer = {"sdp": second.localDescription.sdp, "type": "offer"}
            await second.close()
            async with aiohttp.ClientSession() as http:
                async with http.post(url + "/offer", json=offer) as r:
                    await expect_error(r, 503, "sessions are in use")
                    assert int(r.headers["Retry-After"]) > 0
                long_text = "Раз, два, три, четыре, пять. " * 4
                for _ in range(2):
                    status, _reply = await first.post("/say", {"text": long_text})
                    assert status == 202
                status, reply = await first.post("/say", {"text": "Ещё."})
                assert status == 429 and "already queued" in reply["error"]
                async with http.post(
                    f"{url}/api/sessions/{first.session_id}/say", json={"text": "Ещё."}
                ) as r:
                    assert int(r.headers["Retry-After"]) > 0
                status, reply = await first.post("/interrupt")
                assert status == 200 and len(reply["interrupted"]) == 2
                status, _reply = await first.post("/say", {"text": "Ещё."})
                assert status == 202  # the queue has room again
                async with http.get(url + "/healthz") as r:
                    assert r.status == 200
                state = await first.state()
                assert state["connection"] == "connected"
        finally:
            await first.close()
