"""Faults end or degrade only what they touch, log why, and the server keeps serving.

HTTP: a TTS failure, an engine exception and a full disk during /api/generate; an avatar
cache that cannot be written. (A corrupt avatar cache is covered by
tests/test_avatar.py::test_damaged_cache_is_rebuilt.) Realtime, over loopback WebRTC: a TTS
failure and an engine exception during an utterance, a peer that vanishes mid-utterance (a
client process killed), an ICE failure, and a peer that never starts ICE (closed by the
connect timeout, with aioice's timers left alone). aioice's timers are shortened where the
fault would otherwise take a minute to show.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import aioice.ice
import aioice.stun
import pytest
from aiohttp.test_utils import TestClient, TestServer

import rtc.webrtc.session
from config import PROJECT_ROOT, AppConfig
from inference.avatar.prepare import prepare
from inference.avatar.store import AvatarStore
from inference.engines.base import LipSyncEngine
from inference.engines.serial import SerialEngine
from inference.frames import FacePatch, LipSyncRequest
from inference.tts import Language, Speech, TextToSpeech, TtsError, VoiceOptions
from rtc.http.app import build_app
from rtc.http.metrics import METRICS_KEY
from rtc.services import Services
from rtc.webrtc.signalling import REALTIME_KEY
from tests.realtime_peer import TestClient as PeerClient
from tests.realtime_peer import abandoned_offer, realtime_services, running_server

BREAK = "СЛОМАЙСЯ"
"""Texts containing this make the flaky TTS fail."""


class FlakyTTS(TextToSpeech):
    """The real TTS, except that texts containing BREAK raise TtsError (an engine crash)."""

    name = "flaky"

    def __init__(self, inner: TextToSpeech) -> None:
        self.inner = inner
        self.failures = 0

    def languages(self) -> list[Language]:
        return self.inner.languages()

    def synthesize(self, text: str, language: str, options: VoiceOptions | None = None) -> Speech:
        if BREAK in text:
            self.failures += 1
            raise TtsError("espeak_Synth failed with status 2 (injected)")
        return self.inner.synthesize(text, language)


class BrokenEngine(LipSyncEngine):
    """Raises on every call, like a model that ran out of memory."""

    name = "broken"

    def infer(self, requests: Sequence[LipSyncRequest]) -> list[FacePatch]:
        raise RuntimeError("CUDA out of memory (injected)")


@pytest.fixture
def faulty(loaded_services: Services) -> Services:
    return dataclasses.replace(
        loaded_services,
        tts=FlakyTTS(loaded_services.tts),
        engines={**loaded_services.engines, "broken": SerialEngine(BrokenEngine())},
    )


@pytest.fixture
async def client(faulty: Services) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(build_app(faulty), host="127.0.0.1")) as c:
        yield c


def errors(client: TestClient) -> dict[str, float]:
    return dict(client.app[METRICS_KEY].errors)


def render_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("avatar-render-*")}


async def still_serving(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    r = await client.post("/api/generate", json={"text": "Да.", "language": "ru"})
    assert r.status == 200 and r.content_type == "video/mp4"


async def test_tts_failure_is_503_json_logged_and_counted(
    client: TestClient, faulty: Services, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, "rtc.http.generate"):
        r = await client.post("/api/generate", json={"text": f"{BREAK}!", "language": "ru"})
    assert r.status == 503 and r.content_type == "application/json"
    assert "speech synthesis failed" in (await r.json())["error"]
    assert any(
        "speech synthesis failed" in rec.getMessage() and "injected" in rec.getMessage()
        for rec in caplog.records
    )
    assert isinstance(faulty.tts, FlakyTTS) and faulty.tts.failures == 1
    assert errors(client)["tts"] == 1
    await still_serving(client)


async def test_text_the_tts_refuses_is_400_not_500(client: TestClient) -> None:
    r = await client.post("/api/generate", json={"text": "a\x00b"})
    assert r.status == 400 and "NUL" in (await r.json())["error"]
    await still_serving(client)


async def test_engine_exception_is_500_json_and_the_server_keeps_serving(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    before = render_dirs()
    with caplog.at_level(logging.ERROR, "rtc.http.errors"):
        r = await client.post("/api/generate", json={"text": "Привет.", "engine": "broken"})
    assert r.status == 500 and r.content_type == "application/json"
    assert "injected" not in (await r.json())["error"]  # internals stay in the log ...
    assert any(
        "injected" in (rec.exc_text or "") or (rec.exc_info and "injected" in str(rec.exc_info[1]))
        for rec in caplog.records
    )  # ... which has the trace
    counted = errors(client)
    assert counted["http_500"] == 1
    metrics = await (await client.get("/metrics")).text()
    assert 'avatar_inference_failures_total{engine="broken"} 1.0' in metrics
    assert 'avatar_errors_total{kind="engine"} 1.0' in metrics
    assert render_dirs() <= before
    await still_serving(client)


@pytest.mark.parametrize("where", ["temp-folder", "mid-render"])
async def test_disk_full_is_507_json_and_cleans_up(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    where: str,
) -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    if where == "temp-folder":

        def no_folder(*_: Any, **__: Any) -> Any:
            raise full

        monkeypatch.setattr("rtc.http.generate.tempfile.TemporaryDirectory", no_folder)
    else:

        def half_written(_pcm: Any, _avatar: Any, _engine: Any, out: Path, **_: Any) -> Any:
            out.write_bytes(b"\x00" * 1000)  # part of the file made it before the disk filled
            raise full

        monkeypatch.setattr("rtc.http.generate.render_to_mp4", half_written)
    before = render_dirs()
    with caplog.at_level(logging.ERROR, "rtc.http.generate"):
        r = await client.post("/api/generate", json={"text": "Привет."})
    assert r.status == 507 and "disk space" in (await r.json())["error"]
    assert any("no space left" in rec.getMessage() for rec in caplog.records)
    assert errors(client)["disk"] == 1
    assert render_dirs() <= before  # the half-written render was removed
    monkeypatch.undo()
    await still_serving(client)


def test_unwritable_avatar_cache_keeps_the_avatar(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")  # mkdir fails, even as root
    photo = PROJECT_ROOT / "avatars" / "astronaut.jpg"
    with caplog.at_level(logging.WARNING, "inference.avatar.prepare"):
        media = prepare(photo, blocker / "cache")
    assert len(media.boxes) == len(media.frames) == 1
    assert any("could not be written" in rec.getMessage() for rec in caplog.records)
    with caplog.at_level(logging.WARNING):
        store = AvatarStore.load(PROJECT_ROOT / "avatars", blocker / "cache", "astronaut")
    assert set(store.names()) >= {"astronaut", "cartoon"}


# --- realtime sessions --------------------------------------------------------------------

VANISHING_PEER = """
import asyncio, sys
from rtc.webrtc.ice import use_loopback_ice
from tests.realtime_peer import TestClient

async def main() -> None:
    use_loopback_ice(True)
    client = TestClient(sys.argv[1])
    await client.connect()
    await client.wait_for_frames(3, timeout=20)
    await client.post("/say", {"text": "Раз, два, три, четыре, пять. Раз, два, три."})
    await client.wait_event("speaking_started", 20)
    print("speaking", client.session_id, flush=True)
    await asyncio.sleep(60)  # killed long before

asyncio.run(main())
"""
"""A browser tab in its own process, so it can vanish without a word (SIGKILL)."""


@pytest.fixture
def realtime(
    loopback_ice: None, app_config: AppConfig, avatar_store: AvatarStore, espeak_tts: TextToSpeech
) -> Services:
    services = realtime_services(app_config, avatar_store, FlakyTTS(espeak_tts))
    services.engines["broken"] = SerialEngine(BrokenEngine())
    return services


async def keeps_streaming(client: PeerClient, frames: int = 10) -> None:
    await client.wait_for_frames(len(client.received.video_times) + frames, timeout=10)
    assert (await client.state())["connection"] == "connected"


async def test_realtime_tts_failure_is_an_error_event_and_the_session_lives_on(
    realtime: Services, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_server(realtime) as (url, app):
        client = PeerClient(url)
        try:
            await client.connect()
            await client.wait_for_frames(3)
            with caplog.at_level(logging.WARNING, "rtc.live.speech"):
                status, reply = await client.post("/say", {"text": f"{BREAK}."})
                assert status == 202
                event = await client.wait_event("error")
            assert event["utterance"] == reply["utterance"]
            assert "speech synthesis failed" in event["message"]
            assert any("TTS failed" in r.getMessage() for r in caplog.records)
            # Nothing was spoken, yet the accepted utterance ends like any other: one
            # speaking_ended, after the error, that says why (and no speaking_started).
            ended = await client.wait_event("speaking_ended")
            assert ended["utterance"] == reply["utterance"] and not ended["interrupted"]
            assert ended["error"] == event["message"]
            await keeps_streaming(client)
            assert (await client.state())["speaking"] is False
            mine = [
                e["type"]
                for e in client.received.events
                if e.get("utterance") == reply["utterance"] and e["type"] != "utterance_queued"
            ]
            assert mine == ["error", "speaking_ended"], mine
            status, reply = await client.post("/say", {"text": "Да."})
            assert status == 202
            started = await client.wait_event("speaking_started")
            assert started["utterance"] == reply["utterance"]
            assert app[METRICS_KEY].errors["tts"] == 1
        finally:
            await client.close()


async def test_realtime_engine_exception_is_an_error_event_and_only_that_session_suffers(
    realtime: Services, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_server(realtime) as (url, app):
        broken, healthy = PeerClient(url), PeerClient(url)
        try:
            await broken.connect(engine="broken")
            await healthy.connect()
            await asyncio.gather(broken.wait_for_frames(3), healthy.wait_for_frames(3))
            with caplog.at_level(logging.ERROR, "rtc.live.batcher"):
                assert (await broken.post("/say", {"text": "Привет."}))[0] == 202
                assert (await healthy.post("/say", {"text": "Привет."}))[0] == 202
                event = await broken.wait_event("error")
            assert "lip-sync engine failed" in event["message"]
            assert any("engine broken failed" in r.getMessage() for r in caplog.records)
            # The broken session keeps its audio and idle face and ends the utterance...
            await broken.wait_event("speaking_ended", 15)
            await keeps_streaming(broken)
            # ... and the other session speaks as if nothing happened.
            await healthy.wait_event("speaking_ended", 15)
            assert not any(e["type"] == "error" for e in healthy.received.events)
            assert set(app[REALTIME_KEY].sessions) == {broken.session_id, healthy.session_id}
            assert app[METRICS_KEY].errors["session"] == 1
        finally:
            await asyncio.gather(broken.close(), healthy.close())


async def test_peer_vanishing_mid_utterance_ends_only_its_session(
    realtime: Services, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Consent checks every 0.2 s, given up after 2 misses (RFC 7675; aioice: 5 s x 6).
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 2)
    monkeypatch.setattr(rtc.webrtc.session, "DISCONNECT_GRACE", 0.5)
    async with running_server(realtime) as (url, app):
        survivor = PeerClient(url)
        tab = subprocess.Popen(
            [sys.executable, "-c", VANISHING_PEER, url],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            await survivor.connect()
            assert tab.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(tab.stdout.readline), 30)
            assert line.startswith("speaking"), tab.stderr.read() if tab.stderr else line
            gone = line.split()[1]
            session = app[REALTIME_KEY].sessions[gone]
            with caplog.at_level(logging.INFO, "rtc.webrtc.session"):
                tab.kill()  # no BYE, no DTLS close: the peer just stops answering
                await asyncio.wait_for(session.closed.wait(), 20)
            assert any(f"session={gone} closing: peer" in r.getMessage() for r in caplog.records)
            assert gone not in app[REALTIME_KEY].sessions
            await keeps_streaming(survivor)
            assert (await survivor.post("/say", {"text": "Да."}))[0] == 202
            await survivor.wait_event("speaking_started")
        finally:
            tab.kill()
            tab.wait(5)
            await survivor.close()


async def test_ice_failure_ends_the_session_and_frees_its_slot(
    loopback_ice: None,
    app_config: AppConfig,
    avatar_store: AvatarStore,
    espeak_tts: TextToSpeech,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Connectivity checks give up after 1 retransmission (1.5 s) instead of 6 (63.5 s).
    monkeypatch.setattr(aioice.stun, "RETRY_MAX", 1)
    services = realtime_services(app_config, avatar_store, espeak_tts, max_sessions=1)
    async with running_server(services) as (url, app):
        offer = await abandoned_offer()  # its candidates will never answer a check
        async with aiohttp.ClientSession() as http, http.post(url + "/offer", json=offer) as r:
            assert r.status == 200
            gone = (await r.json())["session_id"]
        session = app[REALTIME_KEY].sessions[gone]
        with caplog.at_level(logging.INFO, "rtc.webrtc.session"):
            await asyncio.wait_for(session.closed.wait(), 20)
        assert any(
            f"session={gone} closing: peer connection failed" in r.getMessage()
            for r in caplog.records
        )
        client = PeerClient(url)  # the only slot is free again
        try:
            await client.connect()
            await keeps_streaming(client, 3)
        finally:
            await client.close()


async def test_peer_that_never_connects_is_closed_after_the_connect_timeout(
    loopback_ice: None,
    app_config: AppConfig,
    avatar_store: AvatarStore,
    espeak_tts: TextToSpeech,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # aioice's own timers are left alone: without the connect timeout the slot would be held
    # for ~64 s (test_ice_failure... shortens them instead).
    timeout, margin = 1.0, 3.0
    services = realtime_services(
        app_config, avatar_store, espeak_tts, max_sessions=1, connect_timeout_seconds=timeout
    )
    async with running_server(services) as (url, app):
        offer = await abandoned_offer()  # never applies the answer, never does ICE
        async with aiohttp.ClientSession() as http:
            with caplog.at_level(logging.INFO, "rtc.webrtc.session"):
                async with http.post(url + "/offer", json=offer) as r:
                    assert r.status == 200
                    gone = (await r.json())["session_id"]
                answered = asyncio.get_running_loop().time()
                events: list[str] = []
                async with http.get(f"{url}/api/sessions/{gone}/events") as sse:
                    async with asyncio.timeout(timeout + margin):
                        async for line in sse.content:  # ends when the session closes
                            if line.startswith(b"event: "):
                                events.append(line.decode().split()[1])
                elapsed = asyncio.get_running_loop().time() - answered
            assert timeout * 0.9 <= elapsed < timeout + margin, elapsed
            assert events[-1] == "session_closed", events
            assert any(
                f"session={gone} closing: peer did not connect within 1 s" in r.getMessage()
                for r in caplog.records
            )
            async with http.get(f"{url}/api/sessions/{gone}") as r:
                assert r.status == 404
            async with http.get(f"{url}/metrics") as r:
                assert "\navatar_sessions 0.0\n" in await r.text()
        assert gone not in app[REALTIME_KEY].sessions
        client = PeerClient(url)  # the only slot is free again, and a real peer still connects
        try:
            await client.connect()
            await keeps_streaming(client, 3)
            await asyncio.sleep(timeout + 0.5)  # a connected session outlives the deadline
            assert client.session_id in app[REALTIME_KEY].sessions
        finally:
            await client.close()
