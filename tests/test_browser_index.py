"""The text-to-video page `/` in headless Chromium, used as a person would."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.browser_support import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    require_browser,
    running_server,
    save_screenshot,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_browser()
    with running_server(tmp_path_factory.mktemp("browser-cache")) as url:
        yield url


@pytest.fixture
async def page(server_url: str) -> AsyncIterator[object]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        context = await browser.new_context(
            viewport={"width": 1200, "height": 900}, accept_downloads=True, locale="en-US"
        )
        pg = await context.new_page()
        await pg.goto(server_url + "/")
        await pg.wait_for_function("document.querySelectorAll('#engine option').length > 0")
        yield pg
        await browser.close()


async def test_russian_text_becomes_a_playing_downloadable_video(page, tmp_path: Path) -> None:
    await page.fill("#text", "Привет! Как у тебя дела сегодня?")
    await page.select_option("#language", "ru")
    await page.select_option("#engine", "viseme")
    await page.click("#speak")
    await page.wait_for_selector("#download:not([hidden])", timeout=60_000)
    # The MP4 is loaded into the player and actually plays: time advances.
    await page.wait_for_function(
        "(() => { const v = document.getElementById('video');"
        " return v.readyState >= 2 && v.duration > 1 && v.videoWidth > 0; })()",
        timeout=30_000,
    )
    await page.evaluate(
        "document.getElementById('video').muted = true; document.getElementById('video').play()"
    )
    await page.wait_for_function(
        "document.getElementById('video').currentTime > 0.3", timeout=30_000
    )
    assert await page.is_hidden("#error")
    stats = await page.text_content("#stat-total")
    assert stats is not None and stats.endswith(" s")
    async with page.expect_download() as info:
        await page.click("#download")
    download = await info.value
    saved = tmp_path / "download.mp4"
    await download.save_as(saved)
    head = saved.read_bytes()[:12]
    assert head[4:8] == b"ftyp", "the download is not an MP4"
    save_screenshot("index.png", await page.screenshot())


async def test_engine_without_checkpoint_is_greyed_with_its_fix(page) -> None:
    # It cannot be picked, and the page says why and what to do, in words, not JSON.
    assert await page.eval_on_selector("#engine option[value='wav2lip-nogan']", "o => o.disabled")
    assert await page.eval_on_selector("#engine", "s => s.value") == "viseme"
    note = await page.text_content("#engine-note")
    assert note is not None
    assert "Wav2Lip-SD-NOGAN.pt" in note and "{" not in note
    assert await page.is_hidden("#error")
    save_screenshot("index-unavailable.png", await page.screenshot())


async def test_the_speed_control_reaches_the_request_and_slows_the_speech(page) -> None:
    await page.fill("#text", "Раз, два, три, четыре, пять.")
    await page.select_option("#engine", "viseme")
    durations = {}
    for speed in ("1", "0.5"):
        await page.fill("#speed", speed)
        # The page posts a job, follows it and fetches its video when done.
        async with (
            page.expect_response("**/api/jobs/*/video", timeout=60_000) as video,
            page.expect_request("**/api/jobs") as info,
        ):
            await page.click("#speak")
        request = await info.value
        body = request.post_data_json
        assert body.get("speed") == (None if speed == "1" else 0.5)  # sent only when changed
        response = await video.value
        durations[speed] = float(response.headers["x-video-duration"])
        await page.wait_for_selector("#speak:not([disabled])", timeout=60_000)
    assert durations["0.5"] > 1.6 * durations["1"], durations  # espeak spoke it slower
