"""Realtime HTTP API: errors are 4xx/503 JSON, limits hold, events stream, nothing leaks."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from config import AppConfig
from inference.avatar.store import AvatarStore
from inference.tts import TextToSpeech
from rtc.services import Services
from rtc.webrtc.ice import rtc_configuration
from rtc.webrtc.signalling import REALTIME_KEY
from tests.realtime_peer import TestClient, realtime_services, running_server

pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("loopback_ice")]


@pytest.fixture
def services(
    app_config: AppConfig, avatar_store: AvatarStore, espeak_tts: TextToSpeech
) -> Services:
    return realtime_services(app_config, avatar_store, espeak_tts)


async def offer_sdp(video: bool = True, audio: bool = True) -> str:
    pc = RTCPeerConnection(rtc_configuration([]))
    if video:
        pc.addTransceiver("video", direction="recvonly")
    if audio:
        pc.addTransceiver("audio", direction="recvonly")
    pc.createDataChannel("control")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def request(method: str, url: str, **kwargs: Any) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as http, http.request(method, url, **kwargs) as resp:
        assert resp.content_type == "application/json", await resp.text()
        return resp.status, await resp.json(), resp.headers


async def test_bad_offers_and_bodies_are_4xx_json(services: Services) -> None:
    good = await offer_sdp()
    audio_only = await offer_sdp(video=False)
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        (
            "/offer",
            {"data": b"not json", "headers": {"Content-Type": "application/json"}},
            400,
            "JSON",
        ),
        ("/offer", {"json": ["an", "array"]}, 400, "object"),
        ("/offer", {"json": {"type": "offer"}}, 400, "sdp"),
        ("/offer", {"json": {"sdp": good, "type": "answer"}}, 400, "type"),
        (
            "/offer",
            {"json": {"sdp": "v=0\r\nthis is not sdp\r\n", "type": "offer"}},
            400,
            "invalid SDP",
        ),
        ("/offer", {"json": {"sdp": audio_only, "type": "offer"}}, 400, "video"),
        (
            "/offer",
            {"json": {"sdp": good, "type": "offer", "engine": "nope"}},
            400,
            "unknown engine",
        ),
        (
            "/offer",
            {"json": {"sdp": good, "type": "offer", "avatar": "nobody"}},
            400,
            "unknown avatar",
        ),
        (
            "/offer",
            {"json": {"sdp": good, "type": "offer", "language": "xx-nope"}},
            400,
            "language",
        ),
        ("/offer", {"json": {"sdp": good, "type": "offer", "echo_mic": "yes"}}, 400, "echo_mic"),
        ("/offer", {"json": {"sdp": good, "type": "offer", "engine": 5}}, 400, "engine"),
        (
            "/api/generate_stream",
            {"json": {"sdp": good, "type": "offer", "engine": "viseme"}},
            400,
            "always uses",
        ),
    ]
    async with running_server(services) as (url, app):
        for path, kwargs, status, words in cases:
            got, body, _ = await request("POST", url + path, **kwargs)
            assert (got, words in body["error"]) == (status, True), (path, kwargs, body)
        assert app[REALTIME_KEY].sessions == {}  # nothing was left half-open
        for method, path in (
            ("POST", "/api/sessions/nope/say"),
            ("POST", "/api/sessions/nope/interrupt"),
            ("DELETE", "/api/sessions/nope"),
            ("GET", "/api/sessions/nope"),
            ("GET", "/api/sessions/nope/events"),
        ):
            got, body, _ = await request(method, url + path, json={"text": "hi"})
            assert got == 404 and "session" in body["error"]


@pytest.mark.parametrize(
    "path,engine",
    [("/api/generate_stream", "wav2lip-gan"), ("/api/generate_stream_nogan", "wav2lip-nogan")],
)
async def test_pinned_engine_without_checkpoint_is_503_with_the_reason(
    services: Services, path: str, engine: str
) -> None:
    async with running_server(services) as (url, _):
        status, body, _ = await request(
            "POST", url + path, json={"sdp": await offer_sdp(), "type": "offer"}
        )
    assert status == 503
    assert body["engine"] == engine
    assert "checkpoint" in body["reason"] and body["reason"] in body["error"]
    assert body["fallback"] == "viseme"


async def test_max_sessions_is_503_with_retry_after(
    app_config: AppConfig, avatar_store: AvatarStore, espeak_tts: TextToSpeech
) -> None:
    services = realtime_services(app_config, avatar_store, espeak_tts, max_sessions=1)
    async with running_server(services) as (url, _):
        first = TestClient(url)
        try:
            await first.connect()
            status, body, headers = await request(
                "POST", url + "/offer", json={"sdp": await offer_sdp(), "type": "offer"}
            )
            assert status == 503 and "sessions" in body["error"]
            assert int(headers["Retry-After"]) > 0
        finally:
            await first.close()
        second = TestClient(url)  # the slot is free again
        try:
            await second.connect()
        finally:
            await second.close()


async def test_say_interrupt_and_server_sent_events(services: Services) -> None:
    async with running_server(services) as (url, _):
        client = TestClient(url)
        try:
            await client.connect(language="ru")
            base = f"{url}/api/sessions/{client.session_id}"
            for body, words in (
                ({"text": ""}, "text"),
                ({"text": 5}, "text"),
                ({"text": "hi", "language": "xx-nope"}, "language"),
                ({"text": "x" * 5000}, "limit"),
            ):
                status, reply = await client.post("/say", body)
                assert status == 400 and words in reply["error"], reply
            events: list[dict[str, Any]] = []
            async with aiohttp.ClientSession() as http, http.get(base + "/events") as resp:
                assert resp.headers["Content-Type"].startswith("text/event-stream")
                status, reply = await client.post("/say", {"text": "Привет. Как дела?"})
                assert status == 202 and reply["sentences"] == 2
                async for line in resp.content:
                    if line.startswith(b"data: "):
                        events.append(json.loads(line[6:]))
                        if events[-1]["type"] == "speaking_started":
                            status, reply = await client.post("/interrupt")
                            assert status == 200 and reply["interrupted"] == ["u1"]
                        if events[-1]["type"] == "speaking_ended":
                            state = await client.state()
                            assert state["speaking"] is False
                            status, _, _ = await request("DELETE", base)
                        if events[-1]["type"] == "session_closed":
                            break
        finally:
            await client.close(delete=False)
    kinds = [e["type"] for e in events]
    assert kinds == ["utterance_queued", "speaking_started", "speaking_ended", "session_closed"]
    assert events[2]["interrupted"] is True
    assert all(e["session"] == client.session_id for e in events)


async def test_idle_sessions_time_out(
    app_config: AppConfig, avatar_store: AvatarStore, espeak_tts: TextToSpeech
) -> None:
    services = realtime_services(app_config, avatar_store, espeak_tts, session_idle_seconds=0.3)
    async with running_server(services) as (url, app):
        client = TestClient(url)
        try:
            await client.connect()
            session = app[REALTIME_KEY].sessions[client.session_id]
            await asyncio.wait_for(session.closed.wait(), 5)
            assert client.session_id not in app[REALTIME_KEY].sessions
        finally:
            await client.close(delete=False)


async def test_twenty_sessions_leave_no_tasks_or_threads(services: Services) -> None:
    def threads() -> set[str]:
        # The default executor keeps up to min(32, cpus + 4) idle workers for reuse: they are
        # a bounded pool, not per-session leftovers, and are checked separately; so is the
        # encode pool, which starts its threads (at most one per core) as encodes need them.
        return {
            t.name
            for t in threading.enumerate()
            if not t.name.startswith(("asyncio_", "ThreadPoolExecutor", "encode_"))
        }

    async with running_server(services) as (url, app):
        warm = TestClient(url)  # first use starts the shared batcher thread
        await warm.connect()
        await warm.wait_for_frames(2)
        await warm.close()
        await asyncio.sleep(0)
        base_tasks = {t.get_name() for t in asyncio.all_tasks()}
        base_threads = threads()
        for wave in range(4):  # 4 waves of 5 concurrent sessions
            clients = [TestClient(url) for _ in range(5)]
            await asyncio.gather(*(c.connect() for c in clients))
            await asyncio.gather(*(c.wait_for_frames(3) for c in clients))
            if wave % 2:  # half the waves just drop the peer, like a closed tab
                await asyncio.gather(*(c.close(delete=False) for c in clients))
            else:
                await asyncio.gather(*(c.close() for c in clients))
        realtime = app[REALTIME_KEY]
        deadline = time.monotonic() + 15
        while realtime.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # dropped peers are noticed by their connection state
        assert realtime.sessions == {}
        gc.collect()
        while time.monotonic() < deadline:
            leftover = {t.get_name() for t in asyncio.all_tasks()} - base_tasks
            extra_threads = threads() - base_threads
            if not leftover and not extra_threads:
                break
            await asyncio.sleep(0.05)
        assert not leftover, leftover
        assert not extra_threads, extra_threads
        pool = [t for t in threading.enumerate() if t.name.startswith("asyncio_")]
        assert len(pool) <= 32
        encoders = [t for t in threading.enumerate() if t.name.startswith("encode_")]
        assert len(encoders) <= (os.cpu_count() or 1), [t.name for t in encoders]


def test_realtime_modules_do_not_import_torch() -> None:
    code = (
        "import sys; import rtc.http.app, rtc.webrtc.signalling, rtc.webrtc.session, "
        "rtc.live.pipeline, rtc.live.batcher, rtc.webrtc.tracks, rtc.live.clock, "
        "rtc.webrtc.ice, rtc.live.events, rtc.live.speech, rtc.live.queues, "
        "inference.live; print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.stdout.strip() == "False"
