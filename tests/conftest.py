"""Shared, session-scoped fixtures: things that take a moment to load and never change.

Names are chosen not to clash with fixtures other test modules define themselves (``tts``,
``cartoon``, ``checkpoint_dir`` ...): a module's own fixture would silently win.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from config import PROJECT_ROOT, AppConfig, AvatarConfig, EngineConfig
from inference.avatar.store import AvatarStore
from inference.engines.base import LipSyncEngine, create_engine
from inference.tts import TextToSpeech, create_tts
from rtc.services import Services
from rtc.webrtc.ice import use_loopback_ice
from tests.browser_support import CHROMIUM, CHROMIUM_FLAGS, weightless_server

SHIPPED_AVATARS = PROJECT_ROOT / "avatars"
"""The avatars the project ships: astronaut.jpg (photo) and cartoon/ (drawn)."""


@pytest.fixture(scope="session")
def avatar_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder for prepared avatars, so tests never write into the repository's."""
    return tmp_path_factory.mktemp("avatar-cache")


@pytest.fixture(scope="session")
def avatar_store(avatar_cache: Path) -> AvatarStore:
    """The shipped avatars, prepared into the tmp cache."""
    return AvatarStore.load(SHIPPED_AVATARS, avatar_cache, "astronaut")


@pytest.fixture(scope="session")
def viseme_engine() -> LipSyncEngine:
    """The weight-free engine, built through the registry like the server does."""
    return create_engine("viseme")


@pytest.fixture(scope="session")
def espeak_tts() -> TextToSpeech:
    """The embedded espeak-ng TTS."""
    tts = create_tts()
    tts.warmup()
    return tts


@pytest.fixture(scope="session")
def empty_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoints folder with nothing in it: Wav2Lip engines must report what is missing."""
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="session")
def app_config(avatar_cache: Path, empty_checkpoints: Path) -> AppConfig:
    """Default configuration except for the tmp cache, the empty checkpoints folder and a
    tmp folder for uploaded avatars (tests never write into the repository's avatars)."""
    return AppConfig(
        engines=EngineConfig(checkpoints_dir=empty_checkpoints),
        avatars=AvatarConfig(
            avatars_dir=SHIPPED_AVATARS,
            cache_dir=avatar_cache,
            uploads_dir=avatar_cache / "uploaded-avatars",
        ),
    )


@pytest.fixture(scope="session")
def loaded_services(app_config: AppConfig) -> Services:
    """Everything the server loads at start-up, loaded once for the whole session."""
    return Services.load(app_config)


@pytest.fixture
def loopback_ice() -> Iterator[None]:
    """aiortc peers in this process gather only 127.0.0.1 candidates (tests stay on loopback)."""
    use_loopback_ice(True)
    yield
    use_loopback_ice(False)


@pytest.fixture(scope="module")
def viseme_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python server.py serve`` with no checkpoints (so the viseme engine), one per module
    of browser tests; skips when no browser can run here."""
    with weightless_server(tmp_path_factory, "--engine", "viseme") as url:
        yield url


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    """Debian's Chromium driven by Playwright (never a downloaded browser)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        instance = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield instance
        await instance.close()
