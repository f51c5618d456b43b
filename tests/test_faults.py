"""Faults end or degrade only what they touch, log why, and the server keeps serving.

HTTP: a TTS failure, an engine exception and a full disk during /api/generate; an avatar
cache that cannot be written. (A corrupt avatar cache is covered by
tests/test_avatar.py::test_damaged_cache_is_rebuilt.)
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from config import PROJECT_ROOT
from inference.avatar.prepare import prepare
from inference.avatar.store import AvatarStore
from inference.engines.base import LipSyncEngine
from inference.frames import FacePatch, LipSyncRequest
from inference.services import SerialEngine, Services
from inference.tts import Language, Speech, TextToSpeech, TtsError
from rtc.app import build_app
from rtc.metrics import METRICS_KEY

pytestmark = pytest.mark.timeout(90)

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

    def synthesize(self, text: str, language: str) -> Speech:
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
        loaded_services, tts=FlakyTTS(loaded_services.tts),
        engines={**loaded_services.engines, "broken": SerialEngine(BrokenEngine())})


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
        client: TestClient, faulty: Services, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, "rtc.generate"):
        r = await client.post("/api/generate", json={"text": f"{BREAK}!", "language": "ru"})
    assert r.status == 503 and r.content_type == "application/json"
    assert "speech synthesis failed" in (await r.json())["error"]
    assert any("speech synthesis failed" in rec.getMessage() and "injected" in rec.getMessage()
               for rec in caplog.records)
    assert isinstance(faulty.tts, FlakyTTS) and faulty.tts.failures == 1
    assert errors(client)["tts"] == 1
    await still_serving(client)


async def test_text_the_tts_refuses_is_400_not_500(client: TestClient) -> None:
    r = await client.post("/api/generate", json={"text": "a\x00b"})
    assert r.status == 400 and "NUL" in (await r.json())["error"]
    await still_serving(client)


async def test_engine_exception_is_500_json_and_the_server_keeps_serving(
        client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    before = render_dirs()
    with caplog.at_level(logging.ERROR, "rtc.errors"):
        r = await client.post("/api/generate", json={"text": "Привет.", "engine": "broken"})
    assert r.status == 500 and r.content_type == "application/json"
    assert "injected" not in (await r.json())["error"]  # internals stay in the log ...
    assert any("injected" in (rec.exc_text or "") or (rec.exc_info and "injected" in
               str(rec.exc_info[1])) for rec in caplog.records)  # ... which has the trace
    counted = errors(client)
    assert counted["http_500"] == 1
    metrics = await (await client.get("/metrics")).text()
    assert 'avatar_inference_failures_total{engine="broken"} 1.0' in metrics
    assert 'avatar_errors_total{kind="engine"} 1.0' in metrics
    assert render_dirs() <= before
    await still_serving(client)


@pytest.mark.parametrize("where", ["temp-folder", "mid-render"])
async def test_disk_full_is_507_json_and_cleans_up(
        client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        where: str) -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    if where == "temp-folder":
        def no_folder(*_: Any, **__: Any) -> Any:
            raise full
        monkeypatch.setattr("rtc.generate.tempfile.TemporaryDirectory", no_folder)
    else:
        def half_written(_pcm: Any, _avatar: Any, _engine: Any, out: Path, **_: Any) -> Any:
            out.write_bytes(b"\x00" * 1000)  # part of the file made it before the disk filled
            raise full
        monkeypatch.setattr("rtc.generate.render_to_mp4", half_written)
    before = render_dirs()
    with caplog.at_level(logging.ERROR, "rtc.generate"):
        r = await client.post("/api/generate", json={"text": "Привет."})
    assert r.status == 507 and "disk space" in (await r.json())["error"]
    assert any("no space left" in rec.getMessage() for rec in caplog.records)
    assert errors(client)["disk"] == 1
    assert render_dirs() <= before  # the half-written render was removed
    monkeypatch.undo()
    await still_serving(client)


def test_unwritable_avatar_cache_keeps_the_avatar(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
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
