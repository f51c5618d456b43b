"""Shared, session-scoped fixtures: things that take a moment to load and never change.

Names are chosen not to clash with fixtures other test modules define themselves (``tts``,
``cartoon``, ``checkpoint_dir`` ...): a module's own fixture would silently win.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from config import PROJECT_ROOT, AppConfig, AvatarConfig, EngineConfig
from inference.avatar.store import AvatarStore
from inference.engines.base import LipSyncEngine, create_engine
from inference.services import Services
from inference.tts import TextToSpeech, create_tts

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
    """Default configuration except for the tmp cache and the empty checkpoints folder."""
    return AppConfig(
        engines=EngineConfig(checkpoints_dir=empty_checkpoints),
        avatars=AvatarConfig(avatars_dir=SHIPPED_AVATARS, cache_dir=avatar_cache),
    )


@pytest.fixture(scope="session")
def loaded_services(app_config: AppConfig) -> Services:
    """Everything the server loads at start-up, loaded once for the whole session."""
    return Services.load(app_config)
