"""Building the server's TTS from its configuration: one backend, or one per language.

``--tts`` names the backend for every language; ``--voice LANG=BACKEND[:VOICE]`` (repeatable)
gives single languages another: "Russian through the HTTP service, Kazakh through Piper,
English through espeak" is ``--tts http --tts-url URL --voice kk=piper:/v/kk_KZ.onnx --voice
en=espeak``. A backend is built once per distinct (backend, voice) and shared.
"""

from __future__ import annotations

from typing import ClassVar

from config import TtsConfig
from inference.tts.base import Language, Speech, TextToSpeech, VoiceOptions, create_tts
from inference.tts.remote import HttpSettings


def build_backend(name: str, config: TtsConfig, voice: str | None = None) -> TextToSpeech:
    """Backend ``name`` from ``config`` (``voice``: a Piper voice or an OpenAI voice name)."""
    http = HttpSettings(timeout=config.tts_timeout)
    if name == "openai":
        if not config.tts_url:
            raise ValueError("--tts openai needs --tts-url (the service's base URL, .../v1)")
        return create_tts(
            "openai",
            url=config.tts_url,
            model=config.tts_model,
            voice=voice or config.tts_voice,
            voices=config.tts_voices,
            key_env=config.tts_key_env,
            languages=config.tts_languages,
            http=http,
        )
    if name == "http":
        if not config.tts_url:
            raise ValueError("--tts http needs --tts-url (where to POST {text, lang})")
        return create_tts(
            "http",
            url=config.tts_url,
            text_field=config.tts_text_field,
            language_field=config.tts_lang_field,
            languages=config.tts_languages,
            http=http,
        )
    if name == "piper":
        return create_tts("piper", voice=voice or config.piper_voice)
    return create_tts(name)


def build_tts(config: TtsConfig) -> TextToSpeech:
    """The configured TTS: the ``tts`` backend, routed per language where ``voices`` says."""
    default = build_backend(config.tts, config)
    if not config.voices:
        return default
    built: dict[tuple[str, str | None], TextToSpeech] = {(config.tts, None): default}
    routes: dict[str, TextToSpeech] = {}
    for entry in config.voices:
        language, sep, target = entry.partition("=")
        if not sep or not language.strip() or not target:
            raise ValueError(
                f"--voice {entry!r}: expected LANG=BACKEND[:VOICE], e.g. kk=piper:v.onnx"
            )
        backend, _, voice = target.partition(":")
        key = (backend, voice or None)
        if key not in built:
            built[key] = build_backend(backend, config, voice or None)
        code = language.strip().lower()
        built[key].check_request("x", code)  # the backend must speak it: fail at start-up
        routes[code] = built[key]
    return LanguageRouter(default, routes)


class LanguageRouter(TextToSpeech):
    """Speaks each language with the backend configured for it (the default for the rest)."""

    name: ClassVar[str] = "router"

    def __init__(self, default: TextToSpeech, routes: dict[str, TextToSpeech]) -> None:
        self.default = default
        self.routes = routes

    def backend(self, language: str) -> TextToSpeech:
        """The backend that speaks ``language``."""
        return self.routes.get(language.strip().lower(), self.default)

    def warmup(self) -> None:
        for backend in {id(b): b for b in (self.default, *self.routes.values())}.values():
            backend.warmup()

    def languages(self) -> list[Language]:
        routed = []
        for code, backend in self.routes.items():
            known = {lang.code: lang for lang in backend.languages()}
            routed.append(known.get(code, Language(code, code, backend.name)))
        rest = [lang for lang in self.default.languages() if lang.code not in self.routes]
        return routed + rest

    def voices(self, language: str) -> list[str]:
        return self.backend(language).voices(language)

    def parallel_sentences(self, language: str) -> int:
        return self.backend(language).parallel_sentences(language)

    def synthesize(self, text: str, language: str, options: VoiceOptions | None = None) -> Speech:
        code = self.check_request(text, language)
        return self.backend(code).synthesize(text, code, options)
