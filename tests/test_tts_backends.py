"""The TTS backends (inference/tts/services.py, piper.py, setup.py) against local fake services
that answer real audio made by PyAV, and the real Piper with the joe voice.

Each backend's speech must be the service's audio (a tone of a known pitch, found again in
the pipeline's 16 kHz samples), each failure mode a clear TtsError, and the per-language
routing must send each language where the configuration says.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from config import TtsConfig
from inference.frames import SAMPLE_RATE
from inference.tts import TtsError, VoiceOptions, create_tts
from inference.tts.remote import HttpSettings
from inference.tts.setup import LanguageRouter, build_tts
from rtc.http.app import build_app
from rtc.services import Services
from tests.media import decode_mp4, encode_audio, tone

FAST = HttpSettings(timeout=2.0, retries=2, backoff=0.01)

FORMATS = {"mp3": ("libmp3lame", "mp3"), "wav": ("pcm_s16le", "wav"), "opus": ("libopus", "ogg")}


def audio_bytes(tmp: Path, kind: str, seconds: float = 1.0, hz: float = 440.0) -> bytes:
    """A tone of ``hz`` encoded as ``kind`` (what a TTS service would answer)."""
    codec, container = FORMATS[kind]
    rate = 48_000 if kind == "opus" else 24_000
    path = encode_audio(tmp / f"tone.{container}", tone(hz, seconds, rate), rate, codec, container)
    return path.read_bytes()


def peak_hz(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * SAMPLE_RATE / len(pcm))


@dataclasses.dataclass
class FakeService:
    """One fake TTS service: what it answers, and the requests it got."""

    answer: Callable[[dict[str, Any]], web.StreamResponse | Any]
    requests: list[tuple[dict[str, Any], dict[str, str]]] = dataclasses.field(default_factory=list)
    url: str = ""


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start fake services on loopback: ``await fake(answer)`` -> FakeService."""
    clients: list[TestClient] = []

    async def start(answer: Callable[[dict[str, Any]], Any]) -> FakeService:
        service = FakeService(answer)

        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.json()
            service.requests.append((body, dict(request.headers)))
            result = service.answer(body)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        app = web.Application()
        app.router.add_post("/v1/audio/speech", handle)
        app.router.add_post("/tts", handle)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        service.url = str(client.make_url(""))
        return service

    yield start
    for client in clients:
        await client.close()


def audio_answer(data: bytes, content_type: str = "audio/mpeg") -> Callable[[dict[str, Any]], Any]:
    return lambda _: web.Response(body=data, content_type=content_type)


@pytest.mark.parametrize("kind", ["mp3", "wav", "opus"])
async def test_openai_backend_speaks_the_services_audio(
    kind: str, fake: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = await fake(audio_answer(audio_bytes(tmp_path, kind, 1.0, 440.0)))
    monkeypatch.setenv("AVATAR_TEST_TTS_KEY", "sk-local")
    tts = create_tts(
        "openai",
        url=service.url + "/v1",
        model="kokoro",
        voice="af_bella",
        voices=("am_adam",),
        key_env="AVATAR_TEST_TTS_KEY",
        response_format=kind,
        http=FAST,
    )
    speech = await asyncio.to_thread(
        tts.synthesize, "Hello there.", "en", VoiceOptions(voice="am_adam", speed=1.25)
    )
    assert speech.pcm.dtype == np.float32 and speech.pcm.ndim == 1
    assert 0.9 < speech.duration < 1.2  # the service's second of audio
    assert abs(peak_hz(speech.pcm) - 440.0) < 5  # and its content
    assert speech.phonemes == () and speech.language == "en"
    body, headers = service.requests[0]
    assert body == {
        "model": "kokoro",
        "input": "Hello there.",
        "voice": "am_adam",
        "response_format": kind,
        "speed": 1.25,
    }
    assert headers["Authorization"] == "Bearer sk-local"
    assert tts.voices("en") == ["af_bella", "am_adam"]
    with pytest.raises(ValueError, match="unknown voice 'nope'"):
        tts.synthesize("Hi.", "en", VoiceOptions(voice="nope"))


async def test_seed_http_backend_sends_its_fields(fake: Any, tmp_path: Path) -> None:
    service = await fake(audio_answer(audio_bytes(tmp_path, "wav", 0.5, 300.0), "audio/wav"))
    tts = create_tts(
        "http", url=service.url + "/tts", text_field="q", language_field="lng", http=FAST
    )
    speech = await asyncio.to_thread(tts.synthesize, "Сәлем.", "kk")
    assert 0.4 < speech.duration < 0.7 and abs(peak_hz(speech.pcm) - 300.0) < 6
    assert service.requests[0][0] == {"q": "Сәлем.", "lng": "kk"}


async def test_failures_are_clear_errors_never_hangs(fake: Any, tmp_path: Path) -> None:
    async def slow(_: dict[str, Any]) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(body=b"")

    ten_minutes = audio_bytes(tmp_path, "wav", 600.0, 200.0)
    cases: list[tuple[Callable[[dict[str, Any]], Any], str, int]] = [
        (
            lambda _: web.Response(status=500, text="model crashed"),
            "answered 500: model crashed",
            3,
        ),
        (lambda _: web.Response(status=400, text="bad voice"), "answered 400: bad voice", 1),
        (slow, "did not answer", 3),
        (audio_answer(b"\x00garbage" * 100), "does not decode", 1),
        (audio_answer(b""), "no audio", 1),
        (audio_answer(ten_minutes, "audio/wav"), "longer than the limit", 1),
    ]
    for answer, message, attempts in cases:
        service = await fake(answer)
        tts = create_tts(
            "openai", url=service.url + "/v1", http=HttpSettings(timeout=0.5, backoff=0.01)
        )
        with pytest.raises(TtsError, match=message):
            await asyncio.to_thread(tts.synthesize, "Hello.", "en")
        assert len(service.requests) == attempts, (message, len(service.requests))


def test_piper_speaks_with_the_joe_voice() -> None:
    tts = create_tts("piper")
    assert [lang.code for lang in tts.languages()] == ["en", "en-us"]
    assert tts.languages()[0].backend == "piper"
    speech = tts.synthesize("Hello, I am the avatar. How are you today?", "en")
    assert speech.pcm.dtype == np.float32 and 1.0 < speech.duration < 6.0
    assert float(np.sqrt(np.mean(speech.pcm**2))) > 0.02  # it said something
    faster = tts.synthesize(
        "Hello, I am the avatar. How are you today?", "en", VoiceOptions(speed=2.0)
    )
    assert faster.duration < 0.75 * speech.duration


def test_routing_sends_each_language_where_configured(tmp_path: Path) -> None:
    config = TtsConfig(tts="espeak", voices=("en=piper", "kk=espeak"))
    tts = build_tts(config)
    assert isinstance(tts, LanguageRouter)
    by_code = {lang.code: lang for lang in tts.languages()}
    assert by_code["en"].backend == "piper" and by_code["en"].voice == "en_US-joe-medium"
    assert by_code["ru"].backend == "espeak"
    assert tts.backend("en").name == "piper" and tts.backend("ru").name == "espeak"
    english = tts.synthesize("Good morning.", "en")
    assert english.phonemes == ()  # Piper: no timings
    russian = tts.synthesize("Доброе утро.", "ru")
    assert russian.phonemes  # espeak keeps its phoneme timings
    with pytest.raises(ValueError, match="expected LANG=BACKEND"):
        build_tts(TtsConfig(voices=("piper",)))
    with pytest.raises(ValueError, match="unknown language 'kk'"):
        build_tts(TtsConfig(voices=("kk=piper",)))  # the joe voice speaks English only


async def test_generate_through_a_service_and_its_errors(
    loaded_services: Services, fake: Any, tmp_path: Path
) -> None:
    healthy = await fake(audio_answer(audio_bytes(tmp_path, "mp3", 1.5, 440.0)))
    broken = await fake(lambda _: web.Response(status=500, text="GPU on fire"))
    for service, expect in ((healthy, 200), (broken, 503)):
        tts = create_tts("openai", url=service.url + "/v1", http=FAST)
        services = dataclasses.replace(loaded_services, tts=tts)
        async with TestClient(TestServer(build_app(services), host="127.0.0.1")) as client:
            resp = await client.post("/api/generate", json={"text": "Hello.", "language": "en"})
            assert resp.status == expect
            if expect == 503:
                error = (await resp.json())["error"]
                assert f"TTS service at {service.url}/v1/audio/speech answered 500" in error
                assert "GPU on fire" in error
                continue
            mp4 = tmp_path / "out.mp4"
            mp4.write_bytes(await resp.read())
            decoded = decode_mp4(mp4)
            assert 1.3 < decoded.audio_duration < 1.8  # the service's 1.5 s
            assert abs(peak_hz(decoded.audio[: int(1.4 * SAMPLE_RATE)]) - 440.0) < 8


async def test_voices_and_languages_endpoints(loaded_services: Services) -> None:
    tts = build_tts(TtsConfig(voices=("en=piper",)))
    services = dataclasses.replace(loaded_services, tts=tts, languages=tts.languages())
    async with TestClient(TestServer(build_app(services), host="127.0.0.1")) as client:
        listed = await (await client.get("/api/languages")).json()
        first = listed["languages"][0]
        assert first == {
            "code": "en",
            "name": first["name"],
            "backend": "piper",
            "voice": "en_US-joe-medium",
        }
        voices = await (await client.get("/api/voices")).json()
        assert voices["voices"]["en"] == ["en_US-joe-medium"]
        assert "ru" not in voices["voices"]  # espeak: one voice per language
        resp = await client.get("/api/voices?language=zz")
        assert resp.status == 400
        resp = await client.post(
            "/api/generate", json={"text": "Hi.", "language": "en", "voice": "x"}
        )
        assert resp.status == 400 and "unknown voice 'x'" in (await resp.json())["error"]
        resp = await client.post("/api/generate", json={"text": "Hi.", "speed": 9})
        assert resp.status == 400
    assert json.dumps(voices)  # plain JSON
