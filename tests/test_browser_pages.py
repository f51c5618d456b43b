"""A newcomer's first ten minutes in headless Chromium, with no Wav2Lip weights: pages that fit
a phone, speak both interface languages, show a render's progress and cancel it, record,
meter the microphone and offer the stream to others."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.browser_support import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    connect_live,
    save_screenshot,
    weightless_server,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
PAGES = ("/", "/realtime", "/realtime2", "/obs/nobody")
LONG_TEXT = "Раз, два, три, четыре, пять, шесть, семь, восемь, девять, десять. " * 25


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """No checkpoints (every newcomer's case); one render at a time and none waiting, so
    a render whose slot was not freed makes the next one fail at once (503)."""
    with weightless_server(
        tmp_path_factory, "--max-parallel-renders", "1", "--max-waiting-renders", "0"
    ) as url:
        yield url


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        await browser.close()


async def open_page(
    chromium: Any, url: str, viewport: dict[str, int], locale: str = "en-US"
) -> tuple[Any, list[str]]:
    """A page in its own context; the list collects page errors and failed requests."""
    context = await chromium.new_context(viewport=viewport, locale=locale)
    await context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = await context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"error: {e}"))

    def response(r: Any) -> None:
        # The OBS page of a stream nobody publishes retries its WHEP offer (404) by design.
        if r.status >= 400 and "/whep/" not in r.url:
            problems.append(f"{r.status} {r.url}")

    page.on("response", response)
    await page.goto(url)
    return page, problems


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
async def test_no_page_scrolls_sideways_and_touch_targets_are_big(
    chromium: Any, server_url: str, viewport: dict[str, int]
) -> None:
    for path in PAGES:
        page, problems = await open_page(chromium, server_url + path, viewport)
        await page.wait_for_load_state("networkidle")
        width = await page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
        assert width[0] <= width[1], (path, width)
        if viewport is PHONE and path != "/obs/nobody":
            small = await page.evaluate(
                """() => [...document.querySelectorAll(
                     'button, select, a.button, nav a, input:not([type=checkbox]), summary')]
                   .filter((e) => e.offsetParent !== null)
                   .map((e) => [e.id || e.textContent.trim(), e.getBoundingClientRect().height])
                   .filter(([, h]) => h < 40)"""
            )
            assert small == [], (path, small)
        assert problems == [], (path, problems)  # no favicon 404, no script error
        name = "index" if path == "/" else path.strip("/").replace("/", "-")
        if path != "/obs/nobody":
            kind = "phone" if viewport is PHONE else "desktop"
            save_screenshot(f"{name}-{kind}.png", await page.screenshot(full_page=True))
        await page.context.close()


async def test_phone_live_page_shows_the_avatar_while_typing(
    chromium: Any, server_url: str
) -> None:
    page, problems = await open_page(chromium, server_url + "/realtime", PHONE)
    await connect_live(page)
    await page.focus("#rt-text")
    await page.evaluate("document.getElementById('rt-text').scrollIntoView({block: 'end'})")
    visible = await page.evaluate(
        """() => ['rt-video', 'rt-text', 'rt-say'].map((id) => {
             const r = document.getElementById(id).getBoundingClientRect();
             return r.top >= 0 && r.bottom <= innerHeight && r.height > 0; })"""
    )
    assert visible == [True, True, True]
    assert problems == []


async def test_live_page_without_weights_connects_speaks_records_and_shares(
    chromium: Any, server_url: str
) -> None:
    import av

    page, problems = await open_page(chromium, server_url + "/realtime", DESKTOP)
    await page.wait_for_function("document.getElementById('rt-video').poster !== ''")
    poster = await page.evaluate(
        "fetch(document.getElementById('rt-video').poster).then(r => r.headers.get('content-type'))"
    )
    assert poster == "image/jpeg"
    # GAN cannot run here: greyed out with the fix, viseme preselected, no error box.
    assert await page.eval_on_selector("#rt-engine-select", "s => s.value") == "viseme"
    assert await page.eval_on_selector(
        "#rt-engine-select option[value='wav2lip-gan']", "o => o.disabled"
    )
    note = await page.text_content("#rt-engine") or ""
    assert "checkpoint" in note and "viseme" in note
    assert await page.is_hidden("#rt-error")
    await connect_live(page)
    await page.click("#rt-record")
    await page.click("#rt-say")
    await page.wait_for_function(
        "document.getElementById('rt-status').textContent.startsWith('speaking')", timeout=30_000
    )
    await page.wait_for_function(
        "parseFloat(document.getElementById('rt-fps').textContent) > 0", timeout=30_000
    )
    await page.wait_for_timeout(2000)
    await page.click("#rt-record")  # Stop
    await page.wait_for_selector("#rt-recording:not([hidden])", timeout=30_000)
    data = await page.evaluate(
        """async () => { const r = await fetch(document.getElementById('rt-recording').href);
             return Array.from(new Uint8Array(await r.arrayBuffer())); }"""
    )
    with av.open(io.BytesIO(bytes(data)), mode="r") as mp4:
        kinds = {s.type for s in mp4.streams}
        frames = len(list(mp4.decode(video=0)))
    assert kinds == {"video", "audio"} and frames >= 25
    # Sharing: the WHEP URL goes to the clipboard, the OBS view is a link to its page.
    await page.click("#rt-copy-whep")
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert "/whep/" in copied and copied.startswith(server_url)
    assert "/obs/" in (await page.get_attribute("#rt-obs", "href") or "")
    # The fake microphone's beeps move the level meter.
    await page.click("#rt-mic")
    await page.wait_for_function(
        "Number(document.getElementById('rt-mic-level').dataset.peak || 0) > 0.05",
        timeout=15_000,
    )
    # Disconnect clears the stats instead of leaving the last numbers.
    await page.click("#rt-connect")
    await page.wait_for_function("document.getElementById('rt-connect').textContent === 'Connect'")
    cells = await page.eval_on_selector_all(".live-stats td", "cs => cs.map((c) => c.textContent)")
    assert set(cells) == {"–"}, cells
    assert await page.is_hidden("#rt-error") and problems == []


async def test_render_progress_and_cancel_free_the_slot(chromium: Any, server_url: str) -> None:
    page, problems = await open_page(chromium, server_url + "/", DESKTOP)
    await page.wait_for_function("document.querySelectorAll('#engine option').length > 0")
    await page.select_option("#engine", "viseme")
    assert await page.eval_on_selector("#engine option[value='wav2lip-gan']", "o => o.disabled")
    await page.fill("#text", LONG_TEXT[:2000])
    await page.click("#speak")
    # Progress advances: frames done grow while the render runs.
    await page.wait_for_function(
        "document.getElementById('progress').value > 0", timeout=60_000, polling=100
    )
    first = await page.eval_on_selector("#progress", "p => [p.value, p.max]")
    await page.wait_for_function(
        f"document.getElementById('progress').value > {first[0]}", timeout=60_000, polling=100
    )
    assert first[1] > 1000  # 2000 characters: minutes of speech
    assert "of" in (await page.text_content("#progress-text") or "")
    await page.click("#cancel")
    await page.wait_for_function(
        "document.getElementById('status').textContent === 'Cancelled'", timeout=30_000
    )
    # The slot is free: with none allowed to wait, a held slot would answer 503 here.
    await page.fill("#text", "Готово.")
    await page.click("#speak")
    await page.wait_for_selector("#download:not([hidden]), #error:not([hidden])", timeout=60_000)
    assert await page.is_hidden("#error"), await page.text_content("#error")
    # A chosen file is shown with a way to clear it; Speak then says what it will do.
    await page.set_input_files(
        "#audio-file", files=[{"name": "a.wav", "mimeType": "audio/wav", "buffer": b"RIFF"}]
    )
    assert await page.is_visible("#file-row")
    assert await page.text_content("#speak") == "Lip-sync the file"
    await page.click("#file-clear")
    assert await page.is_hidden("#file-row") and await page.text_content("#speak") == "Speak"
    assert problems == []


@pytest.mark.parametrize(
    ("locale", "connect", "lang"), [("ru-RU", "Подключить", "ru"), ("en-GB", "Connect", "en")]
)
async def test_the_interface_follows_the_browser_language(
    chromium: Any, server_url: str, locale: str, connect: str, lang: str
) -> None:
    page, problems = await open_page(chromium, server_url + "/realtime", DESKTOP, locale)
    await page.wait_for_function("document.querySelectorAll('#rt-engine-select option').length")
    assert await page.text_content("#rt-connect") == connect
    assert await page.evaluate("document.documentElement.lang") == lang
    # The switch overrides the browser, and the choice is kept.
    other = "en" if lang == "ru" else "ru"
    async with page.expect_navigation():
        await page.select_option("#ui-language", other)
    assert await page.evaluate("document.documentElement.lang") == other
    await page.goto(server_url + "/")
    assert await page.evaluate("document.documentElement.lang") == other
    assert problems == []
