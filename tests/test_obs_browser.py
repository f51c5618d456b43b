"""The OBS viewer page in headless Chromium: it plays a stream an aiortc client controls.

The page (/obs/{stream}) does WHEP itself; frames must advance while the controller speaks,
and when the stream ends and comes back under the same name the page reconnects by itself.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import pytest

from rtc.ice import use_loopback_ice
from tests.browser_support import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_FLAGS,
    require_browser,
    running_server,
)
from tests.realtime_peer import TestClient

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(120)]

STREAM = "obs-test"


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_browser()
    empty = tmp_path_factory.mktemp("no-checkpoints")
    with running_server(tmp_path_factory.mktemp("obs-cache"), "--checkpoints", str(empty),
                        "--engine", "viseme") as url:
        yield url


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        instance = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield instance
        await instance.close()


@pytest.fixture(autouse=True)
def loopback_ice() -> Iterator[None]:
    use_loopback_ice(True)  # the controller in this process talks to the server on loopback
    yield
    use_loopback_ice(False)


async def frames(page: object) -> int:
    return int(await page.evaluate("window.obsStats.frames"))  # type: ignore[attr-defined]


async def test_obs_page_plays_the_stream_and_reconnects(browser, server_url) -> None:
    controller: TestClient | None = TestClient(server_url)
    assert controller is not None
    second: TestClient | None = None
    page = await browser.new_page(viewport={"width": 512, "height": 512})
    try:
        answer = await controller.connect(stream=STREAM, language="ru")
        assert answer["stream"] == STREAM
        await page.goto(f"{server_url}/obs/{STREAM}?bg=green")
        await page.wait_for_function("window.obsStats.frames > 10", timeout=30_000)
        time_before = await page.evaluate("document.getElementById('video').currentTime")
        await asyncio.wait_for(controller.channel_open.wait(), 10)
        controller.channel.send(json.dumps({"type": "say", "text": "Привет, мир!"}))
        await controller.wait_event("speaking_started")
        count = await frames(page)
        await page.wait_for_function(f"window.obsStats.frames > {count + 10}", timeout=20_000)
        video = await page.evaluate(
            "(() => { const v = document.getElementById('video');"
            " return {w: v.videoWidth, t: v.currentTime, muted: v.muted,"
            " controls: v.controls}; })()")
        assert video["w"] > 0 and video["t"] > time_before
        assert not video["controls"]
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "obs.png"))

        # The stream ends: the page keeps trying, and plays again once it is back.
        await controller.close()
        controller = None
        await page.wait_for_function("window.obsStats.state !== 'connected'",
                                     timeout=20_000)
        second = TestClient(server_url)
        await second.connect(stream=STREAM)
        await page.wait_for_function("window.obsStats.connects >= 2", timeout=20_000)
        count = await frames(page)
        await page.wait_for_function(f"window.obsStats.frames > {count + 10}", timeout=20_000)
    finally:
        await page.close()
        if controller is not None:
            await controller.close()
        if second is not None:
            await second.close()
