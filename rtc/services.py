"""The application's parts, loaded once at start-up and shared by every room: the TTS, the
avatars and every engine that can run here (each wrapped in a :class:`SerialEngine`), with
the checks of what a request may ask of them (text, language, engine).

It lives in ``rtc`` because it is the server's wiring of ``inference``'s parts from the
configuration; ``inference`` itself knows no server.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from config import AppConfig
from inference.avatar.store import AvatarStore
from inference.engines.base import EngineUnavailable, LipSyncEngine, create_engine
from inference.engines.serial import SerialEngine
from inference.tts import Language, TextToSpeech, VoiceOptions
from inference.tts.setup import build_tts

log = logging.getLogger(__name__)


class VoiceRequest(Protocol):
    """The voice fields of a request body (rtc/http/bodies.py: VoiceFields)."""

    voice: str | None
    speed: float | None
    pitch: float | None


SHIPPED_ENGINES = ("wav2lip-gan", "wav2lip-nogan", "viseme")
"""Engines the server tries to load at start-up, in order of preference."""


def _speakable(ch: str) -> bool:
    """Letters, digits, marks, punctuation, symbols: not separators (Z*), controls, format
    characters such as zero-width spaces and joiners, or unassigned code points (C*)."""
    return unicodedata.category(ch)[0] not in "CZ"


@dataclass
class Services:
    """Everything loaded at start-up: engines, TTS, avatars."""

    config: AppConfig
    tts: TextToSpeech
    avatars: AvatarStore
    engines: dict[str, LipSyncEngine] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    """Engines that could not load, with the reason (shown by the API and pages)."""
    default_engine: str = "viseme"
    languages: list[Language] = field(default_factory=list)

    @classmethod
    def load(cls, config: AppConfig, engine_names: Sequence[str] = SHIPPED_ENGINES) -> Services:
        """Load TTS, avatars and every engine that can run here; log what runs where."""
        tts = build_tts(config.tts)
        tts.warmup()
        avatars = AvatarStore.load(
            config.avatars.avatars_dir,
            config.avatars.cache_dir,
            config.avatars.default_avatar,
            config.avatars.uploads_dir,
        )
        services = cls(config=config, tts=tts, avatars=avatars, languages=tts.languages())
        for name in engine_names:
            services.try_load(name)
        wanted = config.engines.default_engine
        if wanted is not None:
            if wanted not in services.engines:
                reason = services.unavailable.get(wanted, "unknown engine")
                raise EngineUnavailable(f"default engine {wanted!r} cannot run: {reason}")
            services.default_engine = wanted
        else:
            services.default_engine = next(
                (n for n in ("wav2lip-gan", "viseme") if n in services.engines),
                next(iter(services.engines), "viseme"),
            )
        log.info("default engine: %s", services.default_engine)
        return services

    def try_load(self, name: str) -> None:
        """Load and warm up one engine; record why when it cannot run."""
        try:
            engine = create_engine(name, config=self.config.engines)
            engine.warmup()
        except (EngineUnavailable, ValueError, RuntimeError, OSError) as e:
            self.unavailable[name] = str(e)
            log.warning("engine %s unavailable: %s", name, e)
            return
        self.engines[name] = SerialEngine(engine)
        log.info("engine %s ready: device=%s backend=%s", name, engine.device, engine.backend)

    def engine(self, name: str | None) -> LipSyncEngine:
        """The engine called ``name`` (default for None).

        Raises ValueError for an unknown name and EngineUnavailable (with the reason) for a
        known engine that cannot run here.
        """
        key = name or self.default_engine
        if key in self.engines:
            return self.engines[key]
        if key in self.unavailable:
            raise EngineUnavailable(self.unavailable[key])
        known = ", ".join(sorted(set(self.engines) | set(self.unavailable)))
        raise ValueError(f"unknown engine {key!r}; known engines: {known}")

    def language(self, code: str | None) -> str:
        """Validated language code (default for None); ValueError lists some known ones."""
        key = (code or self.config.tts.default_language).strip()
        return self.tts.check_request("x", key)

    def voice_options(self, language: str, body: VoiceRequest) -> VoiceOptions | None:
        """The voice a request asks for, checked for ``language``; None for the defaults.
        ValueError for a voice the language's backend does not have."""
        if body.voice is None and body.speed is None and body.pitch is None:
            return None
        options = VoiceOptions(voice=body.voice, speed=body.speed, pitch=body.pitch)
        self.tts.check_voice(language, options)
        return options

    def check_text(self, text: object) -> str:
        """The text stripped, or ValueError saying what is wrong with it."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("'text' must be a non-empty string")
        limit = self.config.tts.max_text_chars
        if len(text) > limit:
            raise ValueError(f"text is {len(text)} characters; the limit is {limit}")
        if "\x00" in text:
            # Checked here, not only in the TTS: a realtime 'say' must fail at once, not later.
            raise ValueError("text contains a NUL character; remove it")
        if not any(_speakable(ch) for ch in text):
            raise ValueError(
                "'text' has nothing to speak: only spaces, control or zero-width characters"
            )
        return text.strip()

    def describe_engines(self) -> list[dict[str, object]]:
        """Every engine with its state, for /api/engines."""
        out: list[dict[str, object]] = [
            engine.describe()
            | {"name": name, "available": True, "default": name == self.default_engine}
            for name, engine in self.engines.items()
        ]
        out += [
            {"name": name, "available": False, "error": why}
            for name, why in self.unavailable.items()
        ]
        return out
