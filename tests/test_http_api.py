"""The HTTP API over a real loopback socket: lists, /api/generate (JSON text or an uploaded
audio file) and every kind of bad request, which must answer JSON that says what to change."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from inference.engines.base import LipSyncEngine
from inference.frames import SAMPLE_RATE, FacePatch, LipSyncRequest
from inference.mel import frame_count
from inference.tts import TextToSpeech
from rtc.http.app import build_app
from rtc.services import Services
from tests.media import decode_mp4, encode_audio, tone

TIMING_HEADERS = ("X-Timing-TTS", "X-Timing-Lipsync", "X-Timing-Encode", "X-Timing-Total")
UPLOAD_LIMIT = 64_000
"""Upload limit of the 'tight' server, small so the test need not send 20 MB."""


class BrokenEngine(LipSyncEngine):
    """An engine that fails mid-render, to check clean-up and that the server survives."""

    name = "broken"

    def infer(self, requests: Sequence[LipSyncRequest]) -> list[FacePatch]:
        raise RuntimeError("the model fell over")


@pytest.fixture(scope="module")
def tight_services(loaded_services: Services) -> Services:
    """The loaded services with small upload limits and a broken engine added."""
    config = loaded_services.config
    http = dataclasses.replace(config.http, max_upload_bytes=UPLOAD_LIMIT, max_upload_seconds=2.0)
    return dataclasses.replace(
        loaded_services,
        config=dataclasses.replace(config, http=http),
        engines={**loaded_services.engines, "broken": BrokenEngine()},
    )


async def _client(services: Services) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(build_app(services), host="127.0.0.1")) as client:
        yield client


@pytest.fixture
async def api(loaded_services: Services) -> AsyncIterator[TestClient]:
    async for client in _client(loaded_services):
        yield client


@pytest.fixture
async def tight_api(tight_services: Services) -> AsyncIterator[TestClient]:
    async for client in _client(tight_services):
        yield client


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory, espeak_tts: TextToSpeech) -> bytes:
    pcm = np.asarray(espeak_tts.synthesize("Мама мыла раму.", "ru").pcm)
    path = tmp_path_factory.mktemp("upload") / "speech.wav"
    return encode_audio(path, pcm, SAMPLE_RATE, "pcm_s16le", "wav").read_bytes()


def leftovers() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("avatar-render-*")}


def upload(audio: bytes | None, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData(default_to_multipart=True)
    if audio is not None:
        form.add_field("audio", audio, filename="speech.wav", content_type="audio/wav")
    for key, value in fields.items():
        form.add_field(key, value)
    return form


async def expect_error(response: aiohttp.ClientResponse, status: int, *needles: str) -> str:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    for needle in needles:
        assert needle in body["error"], body["error"]
    return str(body["error"])


async def expect_mp4(response: aiohttp.ClientResponse, tmp_path: Path) -> tuple[Any, float]:
    assert response.status == 200, await response.text()
    assert response.content_type == "video/mp4"
    timings = {h: float(response.headers[h]) for h in TIMING_HEADERS}
    assert all(v >= 0 for v in timings.values())
    parts = sum(timings[h] for h in TIMING_HEADERS[:3])
    assert timings["X-Timing-Total"] == pytest.approx(parts, abs=0.003)
    path = tmp_path / "answer.mp4"
    path.write_bytes(await response.read())
    mp4 = decode_mp4(path)
    assert mp4.video_codec == "h264" and mp4.audio_codec == "aac" and mp4.fps == 25
    assert len(mp4.frames) == int(response.headers["X-Video-Frames"])
    assert mp4.video_duration == pytest.approx(
        float(response.headers["X-Video-Duration"]), abs=0.001
    )
    assert abs(mp4.video_duration - mp4.audio_duration) <= 0.040
    return mp4, mp4.video_duration


# --- read-only lists ----------------------------------------------------------------------


async def test_languages_list_ru_kk_en_first(api: TestClient) -> None:
    r = await api.get("/api/languages")
    assert r.status == 200
    body = await r.json()
    codes = [lang["code"] for lang in body["languages"]]
    assert codes[:3] == ["ru", "kk", "en"]
    names = {lang["code"]: lang["name"] for lang in body["languages"]}
    assert names["ru"] == "Русский" and names["kk"] == "Қазақша" and names["en"] == "English"
    assert body["default"] == "ru"
    assert len(codes) == len(set(codes)) > 3


async def test_engines_say_what_is_missing(api: TestClient, empty_checkpoints: Path) -> None:
    r = await api.get("/api/engines")
    assert r.status == 200
    body = await r.json()
    engines = {e["name"]: e for e in body["engines"]}
    assert body["default"] == "viseme"
    assert engines["viseme"]["available"] is True and engines["viseme"]["default"] is True
    expected = {
        "wav2lip-gan": ("Wav2Lip-SD-GAN.pt", "wav2lip_gan.pth"),
        "wav2lip-nogan": ("Wav2Lip-SD-NOGAN.pt", "wav2lip.pth"),
    }
    for name, files in expected.items():
        assert engines[name]["available"] is False
        for file in files:
            assert file in engines[name]["error"]
        assert str(empty_checkpoints) in engines[name]["error"]


async def test_avatars_and_health(api: TestClient) -> None:
    r = await api.get("/api/avatars")
    body = await r.json()
    assert body["default"] == "astronaut"
    kinds = {a["name"]: a["kind"] for a in body["avatars"]}
    assert kinds == {"astronaut": "photo", "cartoon": "drawn"}
    r = await api.get("/healthz")
    assert r.status == 200 and (await r.json()) == {"status": "ok"}


# --- generating ---------------------------------------------------------------------------


async def test_generate_from_russian_text(api: TestClient, tmp_path: Path) -> None:
    before = leftovers()
    r = await api.post("/api/generate", json={"text": "Привет! Как дела?", "language": "ru"})
    mp4, duration = await expect_mp4(r, tmp_path)
    assert 0.8 < duration < 3.0
    assert mp4.frames[0].shape[:2] == (512, 512)
    assert "inline" in r.headers["Content-Disposition"]
    r = await api.post(
        "/api/generate",
        json={"text": "Сәлем!", "language": "kk", "engine": "viseme", "avatar": "cartoon"},
    )
    await expect_mp4(r, tmp_path)
    assert leftovers() <= before


async def test_generate_from_an_uploaded_recording(
    api: TestClient, tmp_path: Path, speech_wav: bytes
) -> None:
    before = leftovers()
    r = await api.post("/api/generate", data=upload(speech_wav, avatar="cartoon"))
    _, duration = await expect_mp4(r, tmp_path)
    seconds = (len(speech_wav) - 44) / 2 / SAMPLE_RATE
    assert duration == pytest.approx(frame_count(int(seconds * SAMPLE_RATE)) / 25, abs=0.041)
    assert leftovers() <= before


async def test_parallel_requests_all_succeed(api: TestClient, tmp_path: Path) -> None:
    bodies = [{"text": text, "language": "ru"} for text in ("Да.", "Нет.", "Может быть.")]
    answers = await asyncio.gather(*(api.post("/api/generate", json=b) for b in bodies))
    for i, r in enumerate(answers):
        folder = tmp_path / str(i)
        folder.mkdir()
        await expect_mp4(r, folder)


# --- bad requests -------------------------------------------------------------------------


JSON_ERRORS: list[tuple[str, object, int, tuple[str, ...]]] = [
    ("empty text", {"text": "   ", "language": "ru"}, 400, ("'text'", "non-empty")),
    ("no text", {"language": "ru"}, 400, ("'text'",)),
    ("text not a string", {"text": 42, "language": "ru"}, 400, ("'text'", "string")),
    (
        "oversized text",
        {"text": "а" * 2001, "language": "ru"},
        400,
        ("2001 characters", "limit is 2000"),
    ),
    (
        "unknown language",
        {"text": "Привет", "language": "xx"},
        400,
        ("unknown language 'xx'", "ru"),
    ),
    ("language not a string", {"text": "Привет", "language": 7}, 400, ("'language'", "string")),
    (
        "unknown engine",
        {"text": "Привет", "language": "ru", "engine": "magic"},
        400,
        ("unknown engine 'magic'", "viseme"),
    ),
    (
        "unknown avatar",
        {"text": "Привет", "language": "ru", "avatar": "grandma"},
        400,
        ("unknown avatar 'grandma'", "astronaut", "cartoon"),
    ),
    ("array body", ["Привет", "ru"], 400, ("must be an object",)),
    ("string body", "Привет", 400, ("must be an object",)),
    (
        "engine without checkpoint",
        {"text": "Привет", "language": "ru", "engine": "wav2lip-nogan"},
        503,
        ("Wav2Lip-SD-NOGAN.pt", "wav2lip.pth"),
    ),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "needles"), JSON_ERRORS, ids=[c[0] for c in JSON_ERRORS]
)
async def test_bad_json_requests(
    api: TestClient, case: str, body: object, status: int, needles: tuple[str, ...]
) -> None:
    r = await api.post("/api/generate", json=body)
    await expect_error(r, status, *needles)


async def test_malformed_json(api: TestClient) -> None:
    for raw in ('{"text": "Привет", '.encode(), b"\xff\xfe not utf-8", b""):
        r = await api.post("/api/generate", data=raw, headers={"Content-Type": "application/json"})
        await expect_error(r, 400, "JSON")


async def test_wrong_content_type(api: TestClient) -> None:
    r = await api.post("/api/generate", data="Привет", headers={"Content-Type": "text/plain"})
    await expect_error(r, 415, "application/json", "multipart/form-data", "'audio'")
    r = await api.post(
        "/api/generate", data=b"x=1", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    await expect_error(r, 415, "application/json")


async def test_bad_uploads(tight_api: TestClient, speech_wav: bytes, tmp_path: Path) -> None:
    before = leftovers()
    r = await tight_api.post("/api/generate", data=upload(None, language="ru"))
    await expect_error(r, 400, "'audio'")
    r = await tight_api.post("/api/generate", data=upload(b""))
    await expect_error(r, 400, "empty")
    garbage = np.random.default_rng(0).integers(0, 256, 5_000, dtype=np.uint8).tobytes()
    r = await tight_api.post("/api/generate", data=upload(garbage))
    await expect_error(r, 400, "could not decode", "wav, mp3, ogg, m4a or webm")
    r = await tight_api.post("/api/generate", data=upload(speech_wav[:30]))  # cut header
    await expect_error(r, 400, "could not decode")
    big = b"\x00" * (UPLOAD_LIMIT + 10_000)
    r = await tight_api.post("/api/generate", data=upload(big))
    await expect_error(r, 413, "larger than the limit")
    long_wav = encode_audio(
        tmp_path / "long.wav", tone(200.0, 3.0, 8_000), 8_000, "pcm_s16le", "wav"
    ).read_bytes()
    assert len(long_wav) < UPLOAD_LIMIT
    r = await tight_api.post("/api/generate", data=upload(long_wav))
    await expect_error(r, 400, "longer than the limit of 2 s")
    r = await tight_api.post(
        "/api/generate",
        data=json.dumps({"text": "а" * UPLOAD_LIMIT * 2}),
        headers={"Content-Type": "application/json"},
    )
    await expect_error(r, 413, "too large")
    r = await tight_api.post(
        "/api/generate", data=upload(speech_wav[: UPLOAD_LIMIT // 2], engine="wav2lip-gan")
    )
    await expect_error(r, 503, "Wav2Lip-SD-GAN.pt")
    assert leftovers() <= before


async def test_unknown_routes_and_methods_answer_json(api: TestClient) -> None:
    await expect_error(await api.get("/api/generate"), 405)
    await expect_error(await api.get("/api/nothing-here"), 404)


async def test_failed_render_cleans_up_and_the_server_keeps_serving(
    tight_api: TestClient, tmp_path: Path
) -> None:
    before = leftovers()
    r = await tight_api.post(
        "/api/generate", json={"text": "Привет", "language": "ru", "engine": "broken"}
    )
    message = await expect_error(r, 500)
    assert "the model fell over" not in message  # internals stay in the log
    assert leftovers() <= before
    for body in ({"text": "", "language": "ru"}, ["x"], {"text": "Привет", "language": "zz"}):
        assert (await tight_api.post("/api/generate", json=body)).status == 400
    assert (await tight_api.get("/healthz")).status == 200
    r = await tight_api.post("/api/generate", json={"text": "Ещё раз.", "language": "ru"})
    await expect_mp4(r, tmp_path)
    assert leftovers() <= before
