"""Text to speech behind one seam; see :mod:`inference.tts.base`.

``create_tts()`` gives the offline espeak-ng backend; ``split_sentences`` cuts text so the
first sentence can be spoken while the rest is synthesised.
"""

from inference.tts.base import (
    Language,
    Speech,
    TextToSpeech,
    TtsError,
    VoiceOptions,
    available_tts,
    create_tts,
    register_tts,
    split_sentences,
)
from inference.tts.espeak import EspeakTTS

__all__ = [
    "EspeakTTS",
    "Language",
    "Speech",
    "TextToSpeech",
    "TtsError",
    "VoiceOptions",
    "available_tts",
    "create_tts",
    "register_tts",
    "split_sentences",
]
