"""Adding an avatar from the page (web/avatars.js), in headless Chromium: the upload, its
progress, the preview of the face found, and the new avatar chosen in the list."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from config import PROJECT_ROOT
from tests.browser_support import CHROMIUM, CHROMIUM_FLAGS, require_browser, running_server

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

ASTRONAUT = PROJECT_ROOT / "avatars" / "astronaut.jpg"


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_browser()
    avatars = tmp_path_factory.mktemp("avatars")  # uploads land here, not in the repo
    shutil.copy(ASTRONAUT, avatars / "astronaut.jpg")
    with running_server(tmp_path_factory.mktemp("cache"), "--avatars", str(avatars)) as url:
        yield url


@pytest.mark.parametrize("path", ["/", "/realtime2"])
async def test_add_an_avatar_from_the_page(server_url: str, path: str, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    name = "face" + path.strip("/").replace("realtime2", "2")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = await browser.new_page(locale="en-US")  # the status is read in English
        await page.goto(server_url + path)
        await page.wait_for_selector("details.add-avatar", state="attached", timeout=30_000)
        await page.click("details.add-avatar summary")
        await page.set_input_files("details.add-avatar input[type=file]", str(ASTRONAUT))
        await page.fill("details.add-avatar input[type=text]", name)
        await page.click("details.add-avatar button")
        status = "document.querySelector('details.add-avatar [role=status]').textContent"
        await page.wait_for_function(f"{status}.includes('ready')", timeout=60_000)
        image = "document.querySelector('details.add-avatar img')"
        await page.wait_for_function(f"{image}.complete && {image}.naturalWidth > 0")
        preview = await page.evaluate(f"{image}.naturalWidth")
        select = "#avatar" if path == "/" else "#rt-avatar"
        chosen = await page.eval_on_selector(select, "s => s.value")
        await browser.close()
    assert chosen == name  # offered and picked in the page's list
    assert preview == 512  # the server's preview of the face it found
