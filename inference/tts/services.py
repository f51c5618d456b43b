"""Remote TTS services: an OpenAI-compatible ``/audio/speech`` and the seed tool's plain
``POST {text, lang}`` service. Both answer audio bytes (MP3, WAV, OGG/Opus ...), which are
detected from the bytes and decoded with PyAV; neither gives timings, so the viseme engine
reads the mouth from the sound (docs/architecture.md says what that costs).

Thread-safe: each call is its own HTTP request; the server runs them in worker threads, so
sentences of one utterance and different sessions are synthesised in parallel.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import ClassVar

from inference.tts.base import Language, Speech, TextToSpeech, TtsError, VoiceOptions, register_tts
from inference.tts.remote import HttpSettings, post_json, speech_from_audio

PARALLEL_SENTENCES = 3
"""Sentences of one utterance requested at once from a service (the first and two ahead)."""
NATIVE_NAMES = {"ru": "Русский", "kk": "Қазақша", "en": "English"}
"""Names for the languages a service is configured with (others show their code)."""


def _languages(codes: Sequence[str], backend: str, voice: str | None) -> list[Language]:
    return [Language(c, NATIVE_NAMES.get(c, c), backend, voice) for c in codes]


class OpenAITTS(TextToSpeech):
    """An OpenAI-compatible speech endpoint (``POST {base}/audio/speech``), as many local TTS
    servers speak it: JSON ``{model, input, voice, response_format, speed}`` -> audio."""

    name: ClassVar[str] = "openai"

    def __init__(
        self,
        url: str,
        model: str = "tts-1",
        voice: str = "alloy",
        key_env: str | None = None,
        languages: Sequence[str] = ("ru", "kk", "en"),
        voices: Sequence[str] = (),
        response_format: str = "wav",
        http: HttpSettings | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"--tts-url must be the service's http(s) base URL, got {url!r}")
        self.url = url.rstrip("/") + "/audio/speech"
        self.model = model
        self.voice = voice
        self.key_env = key_env
        self._codes = [c.lower() for c in languages]
        self._voices = [voice, *(v for v in voices if v != voice)]
        self.response_format = response_format
        self.http = http or HttpSettings()

    def languages(self) -> list[Language]:
        return _languages(self._codes, self.name, self.voice)

    def parallel_sentences(self, language: str) -> int:
        return PARALLEL_SENTENCES

    def voices(self, language: str) -> list[str]:
        return list(self._voices)

    def synthesize(self, text: str, language: str, options: VoiceOptions | None = None) -> Speech:
        code = self.check_request(text, language)
        voice = self.check_voice(code, options) or self.voice
        body: dict[str, object] = {
            "model": self.model,
            "input": text,
            "voice": voice,
            "response_format": self.response_format,
        }
        if options is not None and options.speed:
            body["speed"] = options.speed
        headers = {}
        if self.key_env:
            key = os.environ.get(self.key_env)
            if not key:
                raise TtsError(f"the TTS key variable {self.key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        data = post_json(self.url, body, headers, self.http)
        return speech_from_audio(data, code, f"TTS service at {self.url}")


class HttpTTS(TextToSpeech):
    """The seed tool's service: ``POST url`` with JSON ``{"text": ..., "lang": ...}`` (field
    names configurable) answering MP3, WAV or OGG."""

    name: ClassVar[str] = "http"

    def __init__(
        self,
        url: str,
        text_field: str = "text",
        language_field: str = "lang",
        languages: Sequence[str] = ("ru", "kk", "en"),
        http: HttpSettings | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"--tts-url must be the service's http(s) URL, got {url!r}")
        self.url = url
        self.text_field = text_field
        self.language_field = language_field
        self._codes = [c.lower() for c in languages]
        self.http = http or HttpSettings()

    def languages(self) -> list[Language]:
        return _languages(self._codes, self.name, None)

    def parallel_sentences(self, language: str) -> int:
        return PARALLEL_SENTENCES

    def synthesize(self, text: str, language: str, options: VoiceOptions | None = None) -> Speech:
        code = self.check_request(text, language)
        self.check_voice(code, options)
        body = {self.text_field: text, self.language_field: code}
        data = post_json(self.url, body, {}, self.http)
        return speech_from_audio(data, code, f"TTS service at {self.url}")


register_tts(OpenAITTS.name, OpenAITTS)
register_tts(HttpTTS.name, HttpTTS)
