"""Helpers for the headless-Chromium tests: a server subprocess on loopback and the browser.

Chromium is Debian's (/usr/bin/chromium), driven by Playwright; nothing is downloaded.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.server_process import server_process

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
]
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOTS = ROOT / "docs" / "screenshots"
PLAYING = (
    "(id) => { const v = document.getElementById(id);"
    " return v.videoWidth > 0 && v.currentTime > 0.5; }"
)
"""Page function: the <video> with this id shows frames and has played half a second."""
LIVE_READY = "document.querySelectorAll('#rt-engine-select option').length > 0"
"""Page function: the live page has loaded the server's engines (and picked one)."""


async def connect_live(page: Any) -> None:
    """On a loaded live page: press Connect and wait until the avatar plays."""
    await page.wait_for_function(LIVE_READY)
    await page.click("#rt-connect")
    await page.wait_for_function(PLAYING, arg="rt-video", timeout=30_000)


def save_screenshot(name: str, png: bytes) -> None:
    """Keep a page screenshot: full size in test-artifacts/, a small copy in docs/screenshots/.

    The docs copy (800 px wide, 4 bits per channel so PNG compresses it to ~80 KB) is what
    README/docs show as the current page. OpenCV is a dependency already; Pillow is not.
    """
    import cv2
    import numpy as np

    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_bytes(png)
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise ValueError(f"screenshot {name} is not a PNG")
    image = np.asarray(decoded, dtype=np.uint8)
    height, width = image.shape[:2]
    if width > 800:
        image = np.asarray(
            cv2.resize(image, (800, round(height * 800 / width)), interpolation=cv2.INTER_AREA),
            dtype=np.uint8,
        )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    coarse = np.bitwise_or(np.bitwise_and(image, 0xF0), 0x08).astype(np.uint8)
    cv2.imwrite(str(SCREENSHOTS / name), coarse, [cv2.IMWRITE_PNG_COMPRESSION, 9])


def require_browser() -> None:
    """Skip unless Debian's Chromium and Playwright are installed (.ci/run installs both)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    if shutil.which("chromium") is None and not Path(CHROMIUM).exists():
        pytest.skip("chromium not on PATH")
    pytest.importorskip("playwright.async_api")


@contextmanager
def running_server(cache_dir: Path, *extra: str) -> Iterator[str]:
    """Start ``python server.py serve`` on loopback; yield its base URL; stop it."""
    with server_process(cache_dir / "server.log", cache_dir, None, *extra, start_seconds=90) as s:
        yield s.base


@contextmanager
def weightless_server(tmp_path_factory: pytest.TempPathFactory, *extra: str) -> Iterator[str]:
    """A server with an empty checkpoints folder (every newcomer's case: no Wav2Lip weights),
    for browser tests; skips when no browser can run here."""
    require_browser()
    empty = tmp_path_factory.mktemp("no-checkpoints")
    with running_server(
        tmp_path_factory.mktemp("server-cache"), "--checkpoints", str(empty), *extra
    ) as url:
        yield url
