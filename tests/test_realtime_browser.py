"""The live pages in headless Chromium over loopback WebRTC, used as a person would.

Without a Wav2Lip checkpoint /realtime must say quietly why GAN cannot run and pick the
viseme engine; with it, the avatar streams, speaks, is interrupted and shows live stats. With a
synthetic checkpoint of the official layout, the page runs Wav2Lip GAN itself.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser_support import (
    LIVE_READY,
    PLAYING,
    connect_live,
    require_browser,
    running_server,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240)]


async def test_realtime_page_explains_missing_gan_and_streams_with_viseme(
    browser, viseme_server_url
) -> None:
    page = await browser.new_page(locale="en-US")
    await page.goto(viseme_server_url + "/realtime")
    await page.wait_for_function(LIVE_READY)
    # No red box: GAN is greyed with its reason and fix, and viseme is picked quietly.
    note = await page.text_content("#rt-engine")
    assert "wav2lip-gan cannot run here" in note and "checkpoint" in note and "viseme" in note
    assert await page.is_hidden("#rt-error") and await page.is_hidden("#rt-fallback")
    await connect_live(page)
    assert await page.is_hidden("#rt-error")
    await page.select_option("#rt-language", "ru")
    await page.click("#rt-say")
    await page.wait_for_function(
        "document.getElementById('rt-status').textContent.startsWith('speaking')", timeout=30_000
    )
    # Live stats come from getStats: a frame rate close to 25 fps.
    await page.wait_for_function(
        "parseFloat(document.getElementById('rt-fps').textContent) >= 20", timeout=30_000
    )
    await page.click("#rt-interrupt")
    await page.wait_for_function(
        "document.getElementById('rt-status').textContent === 'interrupted'", timeout=10_000
    )
    await page.click("#rt-mic")  # Chromium's fake microphone
    await page.wait_for_selector("#rt-mic[aria-pressed='true']", timeout=10_000)
    await page.click("#rt-connect")  # disconnect: the server ends the session
    await page.wait_for_function("document.getElementById('rt-connect').textContent === 'Connect'")


async def test_realtime2_pins_nogan_and_the_index_has_a_live_panel(
    browser, viseme_server_url
) -> None:
    page = await browser.new_page(locale="en-US")
    await page.goto(viseme_server_url + "/realtime2")
    await page.wait_for_function(LIVE_READY)
    assert "wav2lip-nogan cannot run here" in await page.text_content("#rt-engine")
    assert await page.eval_on_selector(
        "#rt-engine-select option[value='wav2lip-nogan']", "o => o.disabled"
    )
    await page.goto(viseme_server_url + "/")
    await page.wait_for_function("document.querySelectorAll('#engine option').length > 0")
    await page.select_option("#engine", "viseme")
    await page.click("#live-connect")
    await page.wait_for_function(PLAYING, arg="live-video", timeout=30_000)
    await page.click("#live-say")
    await page.wait_for_function(
        "document.getElementById('live-status').textContent.startsWith('speaking')", timeout=30_000
    )
    assert await page.is_hidden("#live-error")
    assert await page.is_hidden("#error")  # the text-to-video part is untouched


@pytest.fixture(scope="module")
def gan_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server with a synthetic ``wav2lip_gan.pth`` of the official layout (random
    weights: the real model and backends at real speed, a meaningless mouth)."""
    require_browser()

    from inference.engines.wav2lip_synthetic import save_checkpoint
    from tests.test_wav2lip_model import synthetic_model

    checkpoints = tmp_path_factory.mktemp("gan-checkpoints")
    save_checkpoint(synthetic_model(), checkpoints / "wav2lip_gan.pth")
    with running_server(
        tmp_path_factory.mktemp("gan-cache"), "--checkpoints", str(checkpoints)
    ) as url:
        yield url


async def test_realtime_page_streams_wav2lip_gan_from_a_checkpoint(browser, gan_server_url) -> None:
    """/realtime with a GAN checkpoint present: no fallback offered, the Wav2Lip engine
    streams, speaks and stops when interrupted, as a person would use it."""
    page = await browser.new_page(locale="en-US")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(gan_server_url + "/realtime")
    await page.wait_for_function("document.querySelectorAll('#rt-avatar option').length > 0")
    assert await page.is_hidden("#rt-error") and await page.is_hidden("#rt-fallback")
    assert await page.eval_on_selector("#rt-engine-select", "s => s.value") == "wav2lip-gan"
    assert await page.text_content("#rt-engine") == "Engine: Wav2Lip GAN: real people, teeth"
    await page.click("#rt-connect")
    await page.wait_for_function(PLAYING, arg="rt-video", timeout=60_000)
    await page.select_option("#rt-language", "en")
    await page.fill("#rt-text", "Hello, I am a talking avatar with a Wav2Lip model.")
    await page.click("#rt-say")
    await page.wait_for_function(
        "document.getElementById('rt-status').textContent.startsWith('speaking')", timeout=30_000
    )
    # The mouth comes from the model: the GAN engine's batcher infers frames of this speech.
    await page.wait_for_function(
        """async () => {
             const text = await (await fetch('/metrics')).text();
             const name = 'avatar_batcher_frames_total{engine="wav2lip-gan"} ';
             const line = text.split("\\n").find((l) => l.startsWith(name));
             return line !== undefined && parseFloat(line.slice(name.length)) > 0;
           }""",
        timeout=20_000,
        polling=250,
    )
    await page.click("#rt-interrupt")
    await page.wait_for_function(
        "document.getElementById('rt-status').textContent === 'interrupted'", timeout=10_000
    )
    await page.click("#rt-connect")
    await page.wait_for_function("document.getElementById('rt-connect').textContent === 'Connect'")
    assert await page.is_hidden("#rt-error")
    assert not errors
