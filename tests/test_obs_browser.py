"""The OBS viewer page in headless Chromium: it plays a stream an aiortc client controls.

The page (/obs/{stream}) does WHEP itself; frames must advance while the controller speaks,
and when the stream ends and comes back under the same name the page reconnects by itself.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.browser_support import (
    ARTIFACTS,
)
from tests.realtime_peer import TestClient

# The controller in this process talks to the server over loopback ICE.
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.usefixtures("loopback_ice"),
]

STREAM = "obs-test"


async def frames(page: object) -> int:
    return int(await page.evaluate("window.obsStats.frames"))  # type: ignore[attr-defined]


async def test_obs_page_plays_the_stream_and_reconnects(browser, viseme_server_url) -> None:
    controller: TestClient | None = TestClient(viseme_server_url)
    assert controller is not None
    second: TestClient | None = None
    page = await browser.new_page(viewport={"width": 512, "height": 512})
    try:
        answer = await controller.connect(stream=STREAM, language="ru")
        assert answer["stream"] == STREAM
        await page.goto(f"{viseme_server_url}/obs/{STREAM}?bg=green")
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
            " controls: v.controls}; })()"
        )
        assert video["w"] > 0 and video["t"] > time_before
        assert not video["controls"]
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "obs.png"))

        # The stream ends: the page keeps trying, and plays again once it is back.
        await controller.close()
        controller = None
        await page.wait_for_function("window.obsStats.state !== 'connected'", timeout=20_000)
        second = TestClient(viseme_server_url)
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


@pytest.mark.parametrize(("avatar", "keyed"), [("cartoon", True), ("astronaut", False)])
async def test_transparent_background_keys_only_a_uniform_matte(
    browser, viseme_server_url, avatar: str, keyed: bool
) -> None:
    """The drawn character's plain matte is keyed out; a photo is shown whole (keying its
    background would punch holes in hair: there is no person mask)."""
    controller = TestClient(viseme_server_url)
    page = await browser.new_page(viewport={"width": 512, "height": 512})
    name = f"obs-key-{avatar}"
    try:
        await controller.connect(stream=name, avatar=avatar)
        await page.goto(f"{viseme_server_url}/obs/{name}?bg=transparent")
        await page.wait_for_function("window.obsStats.frames > 10", timeout=30_000)
        assert await page.evaluate("window.obsStats.keyed") is keyed
        corner = await page.evaluate(
            "document.getElementById('canvas').getContext('2d').getImageData(2, 2, 1, 1).data[3]"
        )
        assert (corner == 0) is keyed  # transparent where keyed, opaque for the photo
    finally:
        await page.close()
        await controller.close()
