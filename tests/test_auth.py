"""Token enforcement and CORS on the real application (rtc/auth.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from config import AppConfig, AvatarConfig, EngineConfig, HttpConfig
from inference.services import Services
from rtc.app import build_app

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
    r = await client.post("/api/generate", json=GENERATE,
                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 200 and r.content_type == "video/mp4"
    r = await client.post(f"/api/generate?token={TOKEN}", json=GENERATE)
    assert r.status == 200


async def test_pages_and_read_only_lists_stay_open(client: TestClient) -> None:
    for path in ("/", "/api/languages", "/api/engines", "/api/avatars", "/healthz",
                 "/static/app.js"):
        r = await client.get(path)
        assert r.status == 200, path


async def test_cors_is_only_for_the_configured_origin(client: TestClient) -> None:
    r = await client.get("/api/engines", headers={"Origin": "https://studio.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "https://studio.example"
    r = await client.get("/api/engines", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers
    r = await client.options("/api/generate", headers={
        "Origin": "https://studio.example", "Access-Control-Request-Method": "POST"})
    assert r.status == 204
    assert "Authorization" in r.headers["Access-Control-Allow-Headers"]


async def test_cors_closed_by_default(services: Services) -> None:
    open_config = dataclasses.replace(services.config,
                                      http=HttpConfig())  # no token, no origins
    open_services = dataclasses.replace(services, config=open_config)
    async with TestClient(TestServer(build_app(open_services), host="127.0.0.1")) as c:
        r = await c.get("/api/engines", headers={"Origin": "https://studio.example"})
        assert r.status == 200
        assert "Access-Control-Allow-Origin" not in r.headers


async def test_static_files_cannot_escape_the_web_folder(client: TestClient) -> None:
    for path in ("/static/../server.py", "/static/%2e%2e/server.py",
                 "/static/..%2fconfig.py"):
        r = await client.get(path)
        assert r.status in (403, 404), path
        assert "PROJECT_ROOT" not in await r.text()

