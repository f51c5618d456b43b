"""Token enforcement and CORS on the real application (rtc/http/auth.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from config import AppConfig, AvatarConfig, EngineConfig, HttpConfig
from rtc.http.access_log import RedactingAccessLogger
from rtc.http.app import build_app
from rtc.services import Services

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Services:
    tmp = tmp_path_factory.mktemp("auth")
    config = AppConfig(
        engines=EngineConfig(checkpoints_dir=tmp / "no-checkpoints"),
        avatars=AvatarConfig(cache_dir=tmp / "cache"),
        http=HttpConfig(token=TOKEN, cors_origins=("https://studio.example",)),
    )
    return Services.load(config, ["viseme"])


@pytest.fixture
async def client(services: Services) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(build_app(services), host="127.0.0.1")) as c:
        yield c


GENERATE = {"text": "Привет.", "language": "ru"}


async def test_control_endpoint_refuses_missing_and_wrong_tokens(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        r = await client.post("/api/generate", json=GENERATE, headers=headers)
        assert r.status == 401
        body = await r.json()
        assert "token" in body["error"]
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


async def test_right_token_in_header_or_query_is_accepted(client: TestClient) -> None:
    r = await client.post(
        "/api/generate", json=GENERATE, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert r.status == 200 and r.content_type == "video/mp4"
    r = await client.post(f"/api/generate?token={TOKEN}", json=GENERATE)
    assert r.status == 200


async def test_render_jobs_need_the_token(client: TestClient) -> None:
    for method, path in (
        ("POST", "/api/jobs"),
        ("GET", "/api/jobs/any"),
        ("GET", "/api/jobs/any/events"),
        ("GET", "/api/jobs/any/video"),
        ("DELETE", "/api/jobs/any"),
    ):
        r = await client.request(method, path, json=GENERATE)
        assert r.status == 401, (method, path)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    r = await client.post("/api/jobs", json=GENERATE, headers=bearer)
    assert r.status == 202
    job = r.headers["Location"]
    # ?token= as an EventSource or a <video src> sends it; the stream ends with the job.
    r = await client.get(f"{job}/events?token={TOKEN}")
    assert r.status == 200 and "event: done" in await asyncio.wait_for(r.text(), 60)
    r = await client.get(f"{job}/video?token={TOKEN}")
    assert r.status == 200 and r.content_type == "video/mp4"


async def test_pages_and_read_only_lists_stay_open(client: TestClient) -> None:
    for path in (
        "/",
        "/api/languages",
        "/api/engines",
        "/api/avatars",
        "/healthz",
        "/static/app.js",
    ):
        r = await client.get(path)
        assert r.status == 200, path


async def test_cors_is_only_for_the_configured_origin(client: TestClient) -> None:
    r = await client.get("/api/engines", headers={"Origin": "https://studio.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "https://studio.example"
    r = await client.get("/api/engines", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers
    r = await client.options(
        "/api/generate",
        headers={"Origin": "https://studio.example", "Access-Control-Request-Method": "POST"},
    )
    assert r.status == 204
    assert "Authorization" in r.headers["Access-Control-Allow-Headers"]


async def test_cors_closed_by_default(services: Services) -> None:
    open_config = dataclasses.replace(services.config, http=HttpConfig())  # no token, no origins
    open_services = dataclasses.replace(services, config=open_config)
    async with TestClient(TestServer(build_app(open_services), host="127.0.0.1")) as c:
        r = await c.get("/api/engines", headers={"Origin": "https://studio.example"})
        assert r.status == 200
        assert "Access-Control-Allow-Origin" not in r.headers


async def test_static_files_cannot_escape_the_web_folder(client: TestClient) -> None:
    for path in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/..%2fconfig.py"):
        r = await client.get(path)
        assert r.status in (403, 404), path
        assert "PROJECT_ROOT" not in await r.text()


# --- foreign origins, content types, the viewer token, the access log ----------------------


async def test_foreign_origins_change_nothing_even_without_a_token(services: Services) -> None:
    """A page on another origin may send a "simple" POST (no CORS preflight); without the
    origin check it would run, whatever CORS then hides from the page."""
    open_services = dataclasses.replace(
        services,
        config=dataclasses.replace(
            services.config, http=HttpConfig(cors_origins=("https://studio.example",))
        ),
    )
    async with TestClient(TestServer(build_app(open_services), host="127.0.0.1")) as c:
        for origin in ("https://evil.example", "null", "http://127.0.0.1.evil.example"):
            r = await c.post("/api/generate", json=GENERATE, headers={"Origin": origin})
            assert r.status == 403, origin
            assert "--cors-origin" in (await r.json())["error"]
            r = await c.delete("/api/sessions/nope", headers={"Origin": origin})
            assert r.status == 403
        # The server's own pages, the listed origin and clients that send none work.
        own = f"http://{c.server.host}:{c.server.port}"
        for headers in ({"Origin": own}, {"Origin": "https://studio.example"}, {}):
            r = await c.post("/api/generate", json=GENERATE, headers=headers)
            assert r.status == 200, headers
        # Reading stays open to any origin (CORS decides what the page may see).
        r = await c.get("/api/engines", headers={"Origin": "https://evil.example"})
        assert r.status == 200


async def test_json_endpoints_need_the_json_content_type(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = auth | ({"Content-Type": content_type} if content_type else {})
        for path in ("/api/generate", "/offer", "/api/sessions/x/say"):
            r = await client.post(path, data=b'{"text": "hi"}', headers=headers)
            body = await r.json()
            assert r.status in (415, 404) and "error" in body, (path, content_type)
            if path != "/api/sessions/x/say":  # an unknown session is a 404 first
                assert r.status == 415 and "application/json" in body["error"]


async def test_viewer_token_opens_whep_only(services: Services) -> None:
    both = dataclasses.replace(
        services,
        config=dataclasses.replace(
            services.config, http=HttpConfig(token=TOKEN, viewer_token="watch-only")
        ),
    )
    async with TestClient(TestServer(build_app(both), host="127.0.0.1")) as c:
        sdp = {"Content-Type": "application/sdp"}
        offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n"
        for token in ("watch-only", TOKEN):  # either opens WHEP (404: no such stream)
            r = await c.post(
                "/whep/nobody", data=offer, headers=sdp | {"Authorization": f"Bearer {token}"}
            )
            assert r.status == 404, token
        r = await c.post("/whep/nobody?token=watch-only", data=offer, headers=sdp)
        assert r.status == 404
        r = await c.post("/whep/nobody", data=offer, headers=sdp)
        assert r.status == 401
        # The viewer token controls nothing.
        for method, path in (
            ("POST", "/api/generate"),
            ("POST", "/offer"),
            ("GET", "/api/streams"),
            ("GET", "/metrics"),
        ):
            r = await c.request(
                method, path, json=GENERATE, headers={"Authorization": "Bearer watch-only"}
            )
            assert r.status == 401, path
    viewer_only = dataclasses.replace(
        services,
        config=dataclasses.replace(services.config, http=HttpConfig(viewer_token="watch-only")),
    )
    async with TestClient(TestServer(build_app(viewer_only), host="127.0.0.1")) as c:
        r = await c.post("/whep/nobody", data="v=0", headers={"Content-Type": "application/sdp"})
        assert r.status == 401
        r = await c.get("/api/streams")
        assert r.status == 200


async def test_access_log_never_holds_the_token(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    app = build_app(services)
    server = TestServer(app, host="127.0.0.1")
    # TestServer drops its constructor's runner options; start_server passes them on.
    await server.start_server(
        access_log_class=RedactingAccessLogger,
        access_log=logging.getLogger("aiohttp.access"),
        access_log_format='%a "%r" %s "%{Referer}i" "%{Authorization}i"',
    )
    with caplog.at_level(logging.INFO, logger="aiohttp.access"):
        async with TestClient(server) as c:
            r = await c.get(
                f"/api/sessions/x/events?token={TOKEN}&replay=0",
                headers={"Referer": f"http://127.0.0.1/realtime?token={TOKEN}"},
            )
            assert r.status == 404
            r = await c.post(
                "/api/generate", json=GENERATE, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert r.status == 200
            await asyncio.sleep(0.1)  # the access log line is written after the answer
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "aiohttp.access"]
    assert len(lines) >= 2, lines
    text = "\n".join(lines)
    assert TOKEN not in text, text
    assert "token=%5Bredacted%5D" in text or "token=[redacted]" in text, text
    assert "replay=0" in text and "/api/sessions/x/events" in text
