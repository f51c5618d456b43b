"""The text-to-speech seam: records, a base class, a registry, a factory and a sentence splitter.

A TTS turns text in one language into pipeline audio (float32 mono at 16 kHz) plus the phoneme
and word timings it knows, so the viseme engine can move the mouth without listening. Adding a
TTS (a remote service, say) = one module defining a :class:`TextToSpeech` subclass + one
line in ``BACKENDS`` here (or a ``register_tts`` call).
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from inference.audio_io import SourceAudio
from inference.frames import SAMPLE_RATE, PhonemeMark, WordMark
from inference.registry import Registry

log = logging.getLogger(__name__)


class TtsError(RuntimeError):
    """Synthesis failed for a reason other than bad input: missing library, engine error.

    Bad input (unknown language, empty text) raises ValueError instead.
    """


@dataclass(frozen=True)
class Language:
    """A language a TTS can speak."""

    code: str
    """What ``synthesize`` accepts: an espeak voice language such as ``ru``, ``kk``, ``en-us``."""
    name: str
    """Human name, in the language itself where known (``Русский``, ``Қазақша``, ``English``)."""
    backend: str = ""
    """The TTS backend that speaks it (``espeak``, ``piper``, ``openai``, ``http``)."""
    voice: str | None = None
    """The backend's default voice for it, where the backend has named voices."""


@dataclass(frozen=True)
class VoiceOptions:
    """What one request may ask of the voice (each backend takes what it can)."""

    voice: str | None = None
    """A name from ``voices(language)``; None: the language's default voice."""
    speed: float | None = None
    """1.0 is normal, 0.5 half as fast, 2.0 twice as fast; None: the backend's default."""
    pitch: float | None = None
    """1.0 is normal (espeak only: 0.5 to 2.0 scale its pitch); None: the default."""


@dataclass(frozen=True)
class Speech:
    """One synthesised utterance with its timings, all on the utterance's own timeline."""

    pcm: np.ndarray
    """float32 mono at SAMPLE_RATE (16 kHz), in [-1, 1]; shape (n,)."""
    phonemes: tuple[PhonemeMark, ...]
    """Spoken phonemes in order, starts increasing, inside [0, duration]. Pauses are not
    marked: time not covered by a mark is silence (or a pause inside the speech)."""
    words: tuple[WordMark, ...]
    """Words in order; ``text_position`` indexes the text given to ``synthesize``."""
    language: str
    """Canonical code of the language that was spoken (see :class:`Language`)."""
    source: SourceAudio | None = None
    """The voice at the backend's own rate, for output (MP4s); None: only ``pcm``."""

    def __post_init__(self) -> None:
        # Remote TTS plug-ins will build these too; a wrong dtype or a stereo array would
        # otherwise surface far away, in the mel front end.
        if self.pcm.ndim != 1 or self.pcm.dtype != np.float32:
            raise ValueError(
                f"Speech.pcm must be 1-D float32 at {SAMPLE_RATE} Hz; "
                f"got {self.pcm.dtype} with shape {self.pcm.shape}"
            )

    @property
    def duration(self) -> float:
        """Length of the audio in seconds."""
        return len(self.pcm) / SAMPLE_RATE


class TextToSpeech(ABC):
    """Base class of every text-to-speech backend.

    Implementations must be thread-safe: the server calls ``synthesize`` from worker threads,
    several sessions at once, on one shared instance. A backend that wraps a global C library
    serialises on a lock; a remote one may run calls in parallel.
    """

    name: ClassVar[str]
    """Registry name, e.g. ``espeak``."""

    @abstractmethod
    def languages(self) -> list[Language]:
        """Every language this backend speaks, the most useful ones first."""

    @abstractmethod
    def synthesize(self, text: str, language: str, options: VoiceOptions | None = None) -> Speech:
        """Speak ``text`` in ``language`` (a :attr:`Language.code`, case-insensitive), with
        the voice ``options`` ask for where the backend has them.

        Raises ValueError for an unknown language, an unknown voice or text that is empty
        after stripping, and TtsError when synthesis itself fails.
        """

    def parallel_sentences(self, language: str) -> int:
        """How many sentences of one utterance may be synthesised at once (a remote service
        answers several requests in parallel; a C library behind one lock does not)."""
        return 1

    def voices(self, language: str) -> list[str]:
        """Named voices for ``language`` (a :attr:`Language.code`), default first; empty where
        the backend has one voice per language."""
        return []

    def check_voice(self, language: str, options: VoiceOptions | None) -> str | None:
        """The voice ``options`` name, checked against :meth:`voices`; None for the default."""
        if options is None or options.voice is None:
            return None
        known = self.voices(language)
        if options.voice not in known:
            shown = ", ".join(known) or "none (one voice per language)"
            raise ValueError(f"unknown voice {options.voice!r} for {language}; voices: {shown}")
        return options.voice

    def warmup(self) -> None:  # noqa: B027 - optional hook, empty by default on purpose
        """Load whatever is loaded lazily, so the first real request is not slow."""

    def check_request(self, text: str, language: str) -> str:
        """Validate a ``synthesize`` call; return the canonical language code.

        Shared by implementations so every backend rejects bad input with the same messages.
        """
        if not text.strip():
            raise ValueError("text is empty; give at least one word to speak")
        if "\x00" in text:
            # C libraries read text up to the first NUL and would silently drop the rest.
            raise ValueError("text contains a NUL character; remove it")
        wanted = language.strip().lower().replace("_", "-")
        codes = [lang.code for lang in self.languages()]
        if wanted in codes:
            return wanted
        shown = ", ".join(codes[:8])
        raise ValueError(
            f"unknown language {language!r} for TTS {self.name!r}; "
            f"known codes include {shown} ({len(codes)} in all)"
        )


TtsFactory = Callable[..., TextToSpeech]

# Backends are imported on first use, so a remote service's client library is only needed by
# those who pick it.
BACKENDS: Registry[TextToSpeech] = Registry(
    "TTS",
    {
        "espeak": "inference.tts.espeak",
        "openai": "inference.tts.services",
        "http": "inference.tts.services",
        "piper": "inference.tts.piper",
    },
)


def register_tts(name: str, factory: TtsFactory) -> None:
    """Make ``factory(**options)`` the way to build TTS ``name``."""
    BACKENDS.register(name, factory)


def available_tts() -> list[str]:
    """Names of every known TTS backend."""
    return BACKENDS.names()


def create_tts(name: str = "espeak", **options: object) -> TextToSpeech:
    """Build TTS backend ``name`` with ``options``; ValueError for an unknown name."""
    return BACKENDS.create(name, **options)


# --- sentence splitting --------------------------------------------------------------------

# A run of terminators, then closing quotes/brackets, then whitespace or the end of the line.
# Requiring whitespace after it is what keeps "3.14", "example.com" and "т.е." whole.
_TERMINATOR = re.compile(r"[.!?…]+[\"'»”’)\]]*(?=\s|$)")
_LAST_TOKEN = re.compile(r"[\w.]+$")
_ABBREVIATIONS = frozenset(
    {
        # English titles and the like, which are nearly always followed by a name or number.
        "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "fig", "approx",
        # Russian: год, улица, дом, страница, смотри, рисунок, имени, тысяч, рублей ...
        "г", "гг", "ул", "д", "кв", "стр", "см", "рис", "им", "тыс", "млн", "млрд", "руб",
        "коп", "проф", "акад", "напр", "тел", "обл", "пр", "ст", "р",
        # Kazakh: жыл, ғасыр, мысалы, көшесі.
        "ж", "ғ", "мыс", "көш",
    }
)  # fmt: skip


def _is_boundary(line: str, start: int, end: int, piece_start: int) -> bool:
    """Whether the terminator at line[start:end] really ends a sentence."""
    mark = line[start:end].rstrip("\"'»”’)]")
    if "!" in mark or "?" in mark:
        return True
    following = line[end:].lstrip()
    # "т. е. так", "и т. д. и т. п.", "Ну... ладно": a lower-case continuation means the dots
    # abbreviated or trailed off rather than ended the sentence.
    if following[:1].islower():
        return False
    if mark != ".":
        return True
    token_match = _LAST_TOKEN.search(line, piece_start, start)
    token = token_match.group(0) if token_match else ""
    parts = token.split(".")
    if len(parts) > 1 and all(p.isalpha() and len(p) <= 3 for p in parts):
        return False  # "т.е.", "e.g.", "U.S.", "б.з.б." (but "3.14." and "site.com." end)
    if token.lower() in _ABBREVIATIONS:
        return False
    if len(token) == 1 and token.isupper():
        return False  # an initial: "А. С. Пушкин", "J. R. R. Tolkien"
    # "1. Пункт": a list number alone is not a sentence.
    return not line[piece_start:start].strip().isdigit()


def split_sentences(text: str) -> list[str]:
    """Split text into sentences so realtime can speak the first while the rest is synthesised.

    Splits after ``.``, ``!``, ``?``, ``…`` (runs such as ``?!`` or ``...`` and closing quotes
    stay with their sentence) when whitespace follows, and at every line break. Decimals
    (``3.14``), common Russian/Kazakh/English abbreviations, initials and list numbers do not
    split. Sentences are stripped; empty ones are dropped; text without terminators comes back
    whole. Joining the result with spaces gives back the text's words in order.
    """
    sentences: list[str] = []
    for line in text.splitlines():
        piece_start = 0
        for match in _TERMINATOR.finditer(line):
            if _is_boundary(line, match.start(), match.end(), piece_start):
                sentences.append(line[piece_start : match.end()])
                piece_start = match.end()
        sentences.append(line[piece_start:])
    return [s.strip() for s in sentences if s.strip()]
