"""The live pages in headless Chromium over loopback WebRTC, used as a person would.

No Wav2Lip checkpoint exists here, so /realtime must say why GAN cannot run and offer the
viseme engine; with it, the avatar streams, speaks, is interrupted and shows live stats.
"""

from __future__ import annotations

import pytest

from tests.browser_support import PLAYING

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240)]


async def test_realtime_page_explains_missing_gan_and_streams_with_viseme(
        browser, viseme_server_url) -> None:
    page = await browser.new_page()
    await page.goto(viseme_server_url + "/realtime")
    await page.wait_for_selector("#rt-error:not([hidden])")
    message = await page.text_content("#rt-error")
    assert "wav2lip-gan is unavailable" in message and "checkpoint" in message
    assert await page.text_content("#rt-fallback") == "Use the viseme engine instead"
    await page.click("#rt-fallback")
    await page.wait_for_function(PLAYING, arg="rt-video", timeout=30_000)
    assert await page.is_hidden("#rt-error")
    await page.select_option("#rt-language", "ru")
    await page.click("#rt-say")
    await page.wait_for_function(
        "document.getElementById('rt-status').textContent.startsWith('speaking')",
        timeout=30_000)
    # Live stats come from getStats: a frame rate close to 25 fps.
    await page.wait_for_function(
        "parseFloat(document.getElementById('rt-fps').textContent) >= 20", timeout=30_000)
    await page.click("#rt-interrupt")
    await page.wait_for_function(
        "document.getElementById('rt-status').textContent === 'interrupted'", timeout=10_000)
    await page.click("#rt-mic")  # Chromium's fake microphone
    await page.wait_for_selector("#rt-mic[aria-pressed='true']", timeout=10_000)
    await page.click("#rt-connect")  # disconnect: the server ends the session
    await page.wait_for_function(
        "document.getElementById('rt-connect').textContent === 'Connect'")


async def test_realtime2_pins_nogan_and_the_index_has_a_live_panel(
        browser, viseme_server_url) -> None:
    page = await browser.new_page()
    await page.goto(viseme_server_url + "/realtime2")
    await page.wait_for_selector("#rt-error:not([hidden])")
    assert "wav2lip-nogan is unavailable" in await page.text_content("#rt-error")
    await page.goto(viseme_server_url + "/")
    await page.wait_for_function("document.querySelectorAll('#engine option').length > 0")
    await page.select_option("#engine", "viseme")
    await page.click("#live-connect")
    await page.wait_for_function(PLAYING, arg="live-video", timeout=30_000)
    await page.click("#live-say")
    await page.wait_for_function(
        "document.getElementById('live-status').textContent.startsWith('speaking')",
        timeout=30_000)
    assert await page.is_hidden("#live-error")
    assert await page.is_hidden("#error")  # the text-to-video part is untouched
