"""What a viewer of the live pages sees and hears, measured inside headless Chromium.

The mouth is read from the displayed video (requestVideoFrameCallback + canvas) and the
sound from the received audio track (WebAudio); see tests/browser_sync.py. No Wav2Lip
checkpoint exists here, so the pages run the viseme engine they offer instead.
"""

from __future__ import annotations

import dataclasses
import json
import wave
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.browser_support import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_FLAGS,
    LIVE_READY,
    connect_live,
    save_screenshot,
    weightless_server,
)
from tests.browser_sync import (
    COMPENSATED_WINDOW_MS,
    PHRASES,
    SYNC_JS,
    SyncResult,
    av_offset,
    mouth_activity,
    record_phrases,
    speech_level,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def still_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The viseme server with the photo's head held still: the mouth is found as the part
    of the picture that varies most, and the head's sway (tests/test_head_motion.py) would
    vary too."""
    with weightless_server(tmp_path_factory, "--engine", "viseme", "--no-idle-motion") as url:
        yield url


ECHO_WINDOW_MS = (-45.0, 70.0)
"""The echoed microphone against the mouth (presenter mode): measured about +24 ms."""


def speech_wav(path: Path) -> np.ndarray:
    """Write espeak speech then silence as a 16 kHz WAV; return the PCM (float32)."""
    from inference.tts import create_tts

    pcm = create_tts().synthesize("Раз, два, три, четыре, пять.", "ru").pcm
    pcm = np.concatenate([pcm, np.zeros(16000 * 2, np.float32)])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(pcm, -1, 1) * 32000).astype("<i2").tobytes())
    return pcm


@asynccontextmanager
async def open_live(
    url: str, path: str, *flags: str, echo: bool = False, shot: str | None = None
) -> AsyncIterator[Any]:
    """A page of ``path`` that fell back to the viseme engine and plays; ``shot`` names a
    screenshot of the unavailability notice taken before switching."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_FLAGS, *flags])
        context = await browser.new_context(viewport={"width": 1100, "height": 760}, locale="en-US")
        await context.add_init_script(SYNC_JS)
        page = await context.new_page()
        await page.goto(url + path)
        await page.wait_for_function(LIVE_READY)
        if shot:
            # Readable: shown, inside the viewport, and quiet (a note, not an error).
            box = await page.locator("#rt-engine").bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 1100
            assert "checkpoint" in (await page.text_content("#rt-engine") or "")
            assert await page.is_hidden("#rt-error")
            save_screenshot(shot, await page.screenshot(full_page=True))
        if echo:
            await page.check("#rt-echo")
        await connect_live(page)
        # The page's lip-sync correction settles within a few seconds of the first frames.
        hold = "parseFloat(document.getElementById('rt-sync').textContent)"
        await page.wait_for_function(f"{hold} > 0", timeout=15_000)
        await page.wait_for_timeout(3000)
        try:
            yield page
        finally:
            await browser.close()


def save_result(name: str, sync: SyncResult) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_text(json.dumps(dataclasses.asdict(sync), indent=1))


async def test_realtime2_lip_sync_mouth_interrupt_and_stats(still_server_url: str) -> None:
    async with open_live(still_server_url, "/realtime2") as page:
        # Six onsets: a median that one frame of jitter on a loaded machine does not move.
        rec = await record_phrases(page, PHRASES * 2)
        # The mouth moves while the avatar speaks and rests while it is idle.
        times, activity = mouth_activity(rec)
        first, last = rec["spans"][0][0], rec["spans"][-1][1]
        idle = activity[times < first]
        speaking = activity[(times > first) & (times < last)]
        assert len(idle) >= 10 and len(speaking) >= 50
        assert speaking.mean() > 3 * max(idle.mean(), 0.3), (speaking.mean(), idle.mean())
        # Lip-sync as heard and seen, with the page's correction (docs/benchmarks.md).
        sync = av_offset(rec)
        assert len(sync.onsets_ms) >= 4, sync
        save_result("realtime2-sync.json", sync)
        assert COMPENSATED_WINDOW_MS[0] <= sync.offset_ms <= COMPENSATED_WINDOW_MS[1], sync
        # The stats panel and the browser's own getStats show a live stream.
        assert float((await page.text_content("#rt-fps") or "0").split()[0]) > 0
        inbound = await page.evaluate("window.__avsync.inbound()")
        assert inbound["video"]["framesPerSecond"] > 0
        assert inbound["video"]["framesDecoded"] > 50
        save_screenshot("realtime2.png", await page.screenshot(full_page=True))
        # Interrupt: the sound stops within a moment of pressing the button.
        await page.fill("#rt-text", "Раз два три четыре пять шесть семь восемь девять десять. " * 3)
        await page.evaluate("window.__avsync.start('rt-video')")
        await page.click("#rt-say")
        await page.wait_for_function(
            "document.getElementById('rt-status').textContent.startsWith('speaking')",
            timeout=30_000,
        )
        await page.wait_for_timeout(1500)
        pressed = await page.evaluate("performance.now()")
        await page.click("#rt-interrupt")
        await page.wait_for_function(
            "document.getElementById('rt-status').textContent === 'interrupted'", timeout=10_000
        )
        await page.wait_for_timeout(1500)
        rec = await page.evaluate("window.__avsync.stop()")
        before = speech_level(rec, pressed - 1200, pressed)
        after = speech_level(rec, pressed + 700, pressed + 1500)
        assert after < 0.2 * before, (before, after)


async def test_realtime_gan_page_is_readable_without_checkpoint(still_server_url: str) -> None:
    async with open_live(still_server_url, "/realtime", shot="realtime-unavailable.png") as page:
        # The fallback notice stays on the page after switching: the user knows why.
        assert "viseme" in (await page.text_content("#rt-engine") or "")


async def test_microphone_speech_moves_the_mouth(still_server_url: str, tmp_path: Path) -> None:
    wav = tmp_path / "speech.wav"
    pcm = speech_wav(wav)
    speech_fraction = float((np.abs(pcm) > 0.02).mean())
    async with open_live(
        still_server_url, "/realtime2", f"--use-file-for-fake-audio-capture={wav}", echo=True
    ) as page:
        await page.evaluate("window.__avsync.start('rt-video')")
        await page.wait_for_timeout(2000)
        pressed = await page.evaluate("performance.now()")
        await page.click("#rt-mic")
        await page.wait_for_selector("#rt-mic[aria-pressed='true']", timeout=10_000)
        # Keep recording while the fake microphone loops the WAV about twice.
        await page.wait_for_timeout(int(2.2 * len(pcm) / 16))
        rec = await page.evaluate("window.__avsync.stop()")
        times, all_activity = mouth_activity(rec)
        idle_activity = all_activity[times < pressed]
        activity = all_activity[times > pressed + 1000]
        assert activity.mean() > 3 * max(idle_activity.mean(), 0.3)
        # The mouth moves only while the WAV speaks: part of the time it rests.
        moving = float((activity > 0.25 * activity.max()).mean())
        assert 0.15 < moving < min(0.95, speech_fraction + 0.4), (moving, speech_fraction)
        # The echoed voice ("send my voice back") and the mouth rise and fall together, and
        # stay together: measured +24 ms median, onsets within 5 ms of each other (it once
        # drifted from -23 to +280 ms). Bounded with the same frame of margin as speech.
        sync = av_offset(rec)
        assert sync.onsets_ms and sync.correlation > 0.3, sync
        assert ECHO_WINDOW_MS[0] <= sync.offset_ms <= ECHO_WINDOW_MS[1], sync
        assert max(sync.onsets_ms) - min(sync.onsets_ms) <= 80, sync
        save_result("mic-echo-sync.json", sync)
