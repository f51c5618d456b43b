"""Prometheus metrics at /metrics: every family is exposed, values move with activity
(/api/generate, engines, a realtime session over loopback WebRTC), per-session series go
away with their session, and each application has its own registry."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from config import AppConfig
from inference.avatar.store import AvatarStore
from inference.tts import TextToSpeech
from rtc.http.app import build_app
from rtc.services import Services
from rtc.webrtc.ice import use_loopback_ice
from tests.realtime_peer import TestClient as PeerClient
from tests.realtime_peer import realtime_services, running_server

pytestmark = pytest.mark.timeout(90)

ALWAYS = (
    "avatar_errors",
    "avatar_http_responses",
    "avatar_generate_requests",
    "avatar_generate_seconds",
    "avatar_generate_video_seconds",
    "avatar_inference_batch_size",
    "avatar_inference_seconds",
    "avatar_inference_failures",
    "avatar_sessions",
    "avatar_sessions_limit",
    "avatar_session_fps",
    "avatar_session_frames_sent",
    "avatar_session_frames_skipped",
    "avatar_session_frames_missing",
    "avatar_session_pictures_late",
    "avatar_session_queue_depth",
    "avatar_session_av_offset_seconds",
    "avatar_batcher_batches",
    "avatar_batcher_frames",
    "avatar_batcher_latency_seconds",
    "avatar_stream_viewers",
    "avatar_asyncio_tasks",
    "avatar_threads",
    "process_resident_memory_bytes",
    "process_open_fds",
)
"""Families present from the start (per-session ones without samples until a session)."""


Samples = dict[str, dict[frozenset[tuple[str, str]], float]]


def parse(text: str) -> Samples:
    """Samples by name, then by their label set; ``#family NAME`` for each family."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        out.setdefault("#family " + family.name, {})
        for sample in family.samples:
            out.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return out


async def scrape(client: TestClient) -> Samples:
    """/metrics of a test client's app."""
    r = await client.get("/metrics")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=")
    return parse(await r.text())


async def scrape_url(url: str) -> Samples:
    """/metrics of the server at ``url``."""
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as r:
        assert r.status == 200
        return parse(await r.text())


def value(samples: Samples, name: str, labels: Mapping[str, str] | None = None) -> float:
    """One sample's value (0 when absent)."""
    return samples.get(name, {}).get(frozenset((labels or {}).items()), 0.0)


async def test_every_family_is_exposed(loaded_services: Services) -> None:
    async with TestClient(TestServer(build_app(loaded_services), host="127.0.0.1")) as client:
        samples = await scrape(client)
    for name in ALWAYS:
        assert "#family " + name in samples, name
    for kind in ("engine", "tts", "disk", "recording", "http_500", "session"):
        assert value(samples, "avatar_errors_total", {"kind": kind}) == 0
    assert value(samples, "avatar_sessions") == 0
    assert value(samples, "avatar_sessions_limit") == loaded_services.config.realtime.max_sessions


async def test_generate_moves_its_counters_and_the_engine_histograms(
    loaded_services: Services,
) -> None:
    async with TestClient(TestServer(build_app(loaded_services), host="127.0.0.1")) as client:
        before = await scrape(client)
        r = await client.post("/api/generate", json={"text": "Привет! Как дела?"})
        assert r.status == 200
        assert (await client.post("/api/generate", json={"text": ""})).status == 400
        after = await scrape(client)
    ok = {"source": "text", "status": "200"}
    assert value(after, "avatar_generate_requests_total", ok) == 1
    assert value(after, "avatar_generate_requests_total", {"source": "text", "status": "400"}) == 1
    assert value(after, "avatar_generate_seconds_count") == 1
    assert value(after, "avatar_generate_seconds_sum") > 0
    duration = float(r.headers["X-Video-Duration"])
    assert value(after, "avatar_generate_video_seconds_total") == pytest.approx(duration)
    engine = {"engine": "viseme"}
    # The engine is shared by the whole test session: compare with the scrape before.
    calls = value(after, "avatar_inference_seconds_count", engine) - value(
        before, "avatar_inference_seconds_count", engine
    )
    frames = value(after, "avatar_inference_batch_size_sum", engine) - value(
        before, "avatar_inference_batch_size_sum", engine
    )
    assert calls >= 1
    assert frames == int(r.headers["X-Video-Frames"])
    inf = value(after, "avatar_inference_batch_size_bucket", engine | {"le": "+Inf"})
    assert inf == value(after, "avatar_inference_batch_size_count", engine)
    route = {"route": "/api/generate", "method": "POST"}
    assert value(after, "avatar_http_responses_total", route | {"status": "200"}) == 1
    assert value(after, "avatar_http_responses_total", route | {"status": "400"}) == 1


async def test_each_app_has_its_own_registry(loaded_services: Services) -> None:
    first, second = build_app(loaded_services), build_app(loaded_services)
    async with (
        TestClient(TestServer(first, host="127.0.0.1")) as a,
        TestClient(TestServer(second, host="127.0.0.1")) as b,
    ):
        for _ in range(3):
            assert (await a.get("/api/nothing")).status == 404
        missing = {"route": "unmatched", "method": "GET", "status": "404"}
        assert value(await scrape(a), "avatar_http_responses_total", missing) == 3
        assert value(await scrape(b), "avatar_http_responses_total", missing) == 0


async def test_realtime_sessions_show_up_and_go_away(
    app_config: AppConfig, avatar_store: AvatarStore, espeak_tts: TextToSpeech
) -> None:
    use_loopback_ice(True)
    services = realtime_services(app_config, avatar_store, espeak_tts)
    try:
        async with running_server(services) as (url, _):
            client = PeerClient(url)
            try:
                await client.connect()
                await client.wait_for_frames(10)
                idle = await scrape_url(url)
                key = {"session": str(client.session_id), "engine": "viseme"}
                video = key | {"track": "video"}
                assert value(idle, "avatar_sessions") == 1
                assert value(idle, "avatar_session_fps", key) > 0
                assert value(idle, "avatar_session_frames_sent_total", video) >= 10
                for queue in ("video", "audio", "utterances", "sentences", "batcher"):
                    labels = frozenset((key | {"queue": queue}).items())
                    assert labels in idle["avatar_session_queue_depth"], queue
                stream = {"stream": str(client.stream)}  # the default stream name
                assert frozenset(stream.items()) in idle["avatar_stream_viewers"]
                assert value(idle, "avatar_stream_encoders", stream) == 1  # the session's own
                own = stream | {"receiver": "session", "track": "video"}
                assert frozenset(own.items()) in idle["avatar_stream_packets_dropped_total"]
                offset = value(idle, "avatar_session_av_offset_seconds", key)
                assert abs(offset) <= 0.2  # one clock releases both tracks
                status, _ = await client.post("/say", {"text": "Привет! Как дела?"})
                assert status == 202
                await client.wait_event("speaking_ended", 15)
                spoke = await scrape_url(url)
            finally:
                await client.close()
            sent = "avatar_session_frames_sent_total"
            assert value(spoke, sent, video) > value(idle, sent, video)
            viseme = {"engine": "viseme"}
            assert value(spoke, "avatar_batcher_frames_total", viseme) > 0
            assert value(spoke, "avatar_batcher_batches_total", viseme) > 0
            assert value(spoke, "avatar_inference_seconds_count", viseme) > 0
            assert value(spoke, "avatar_errors_total", {"kind": "session"}) == 0
            assert value(spoke, "avatar_asyncio_tasks") > 0
            assert value(spoke, "process_open_fds") > 0
            async with asyncio.timeout(10):
                while value(gone := await scrape_url(url), "avatar_sessions") != 0:
                    await asyncio.sleep(0.05)
            assert gone.get("avatar_session_fps", {}) == {}  # its series went with it
    finally:
        use_loopback_ice(False)
