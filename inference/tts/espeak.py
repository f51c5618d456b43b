"""Offline text to speech with espeak-ng 1.52, through ctypes on the library that the
``espeakng-loader`` wheel ships together with its voice data (ru, kk, en and ~100 more).

espeak runs in synchronous mode: ``espeak_Synth`` returns once the whole text is spoken into
our callback, which collects 16-bit samples at espeak's native rate (22050 Hz) and the events
espeak reports with sample positions: phonemes (its own ASCII mnemonics, e.g. ``p``, ``'e``,
``a#``) and words. The audio is resampled to the pipeline's 16 kHz; the timings stay exact
because they are computed from native sample positions.

Pause phonemes (every mnemonic starting with ``_``: ``_:``, ``_``, ``_!`` ...) are not marked,
but they still end the phoneme before them, so a gap between marks is a real pause in the
audio and the lip-sync can show the resting mouth there.

espeak keeps a little state between utterances (the phase of its pitch "flutter"), so the
same text is not bit-identical twice in a process; timings differ by about a millisecond.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
from scipy.signal import resample_poly

from inference.audio_io import SourceAudio
from inference.frames import SAMPLE_RATE, PhonemeMark, WordMark
from inference.tts.base import Language, Speech, TextToSpeech, TtsError, VoiceOptions, register_tts

log = logging.getLogger(__name__)

# Values from espeak-ng's speak_lib.h (API revision 12).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_BUFFER_MS = 200
"""Length of the buffers espeak hands to the callback; longer means fewer Python calls."""

FIRST_LANGUAGES = ("ru", "kk", "en")
"""Listed first by ``languages()``: the languages the product is made for."""

_NATIVE_NAMES = {
    "ru": "Русский", "kk": "Қазақша", "en": "English", "uk": "Українська",
    "be": "Беларуская", "ky": "Кыргызча", "uz": "Oʻzbekcha", "tt": "Татарча",
    "ba": "Башҡортса", "az": "Azərbaycanca", "tr": "Türkçe", "de": "Deutsch",
    "fr": "Français", "es": "Español", "it": "Italiano", "pt": "Português",
    "pl": "Polski", "zh": "中文", "ja": "日本語", "ko": "한국어", "ar": "العربية",
    "hi": "हिन्दी", "ka": "ქართული", "hy": "Հայերեն",
}  # fmt: skip
"""Names of bare language codes in their own language; other codes keep espeak's name."""


class _EventId(ctypes.Union):
    _fields_ = (
        ("number", ctypes.c_int),  # word and sentence events
        ("name", ctypes.c_char_p),  # mark and play events
        ("string", ctypes.c_char * 8),  # phoneme events: mnemonic, NUL-terminated unless 8 long
    )


class _Event(ctypes.Structure):
    """``espeak_EVENT`` (40 bytes on 64-bit platforms)."""

    _fields_ = (
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based, in characters
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds
        ("sample", ctypes.c_int),  # position at the native rate
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    )


class _Voice(ctypes.Structure):
    """``espeak_VOICE``; ``languages`` is a byte list, so it is read as a raw pointer."""

    _fields_ = (
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    )


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class _RawEvent(NamedTuple):
    kind: int
    text_position: int
    length: int
    sample: int
    phoneme: str


@dataclass(frozen=True)
class _VoiceChoice:
    identifier: str
    """Voice file name under espeak-ng-data/lang, e.g. ``zle/ru``."""
    espeak_name: str
    priority: int
    """espeak's preference for this voice for the language: lower is better."""


_PARAM_RATE = 1  # espeakRATE in speak_lib.h
_PARAM_PITCH = 3  # espeakPITCH
_DEFAULT_RATE = 175  # words per minute
_DEFAULT_PITCH = 50  # of 0-100


class _Library:
    """The loaded library and its single synthesiser. Use only while holding ``_LOCK``."""

    def __init__(self) -> None:
        try:
            import espeakng_loader

            lib_path = espeakng_loader.get_library_path()
            data_path = espeakng_loader.get_data_path()
            self._lib = ctypes.CDLL(lib_path)
        except (ImportError, OSError, RuntimeError) as e:
            raise TtsError(
                f"espeak-ng is not available ({e}); install it with 'pip install espeakng-loader'"
            ) from e
        self._declare()
        rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path.encode(), _INITIALIZE_PHONEME_EVENTS
        )
        if rate <= 0:
            raise TtsError(f"espeak_Initialize failed ({rate}) with data at {data_path}")
        self.rate: int = rate
        self._chunks: list[bytes] = []
        self._events: list[_RawEvent] = []
        self._callback_error: BaseException | None = None
        # Kept on the instance: if ctypes freed the thunk, espeak would call into garbage.
        self._callback = _SynthCallback(self._on_synth)
        self._lib.espeak_SetSynthCallback(self._callback)
        self._current_voice: str | None = None
        self.choices = self._list_voices(Path(data_path))
        self.variants = frozenset(p.name for p in (Path(data_path) / "voices" / "!v").glob("*"))
        log.info("espeak-ng loaded from %s: %d Hz, %d languages", lib_path, rate, len(self.choices))

    def _declare(self) -> None:
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int

    def _list_voices(self, data_path: Path) -> dict[str, _VoiceChoice]:
        """Best voice for every language code espeak knows, skipping voices without data."""
        choices: dict[str, _VoiceChoice] = {}
        voices = self._lib.espeak_ListVoices(None)
        index = 0
        while voices[index]:
            voice = voices[index].contents
            index += 1
            identifier = (voice.identifier or b"").decode()
            name = (voice.name or b"").decode(errors="replace").strip()
            languages = _parse_languages(voice.languages)
            if not identifier or not languages:
                continue
            if not _has_dictionary(data_path, identifier, languages[0][1]):
                # espeak selects such a voice without complaint and then speaks nothing.
                log.debug("espeak voice %s skipped: its dictionary is not shipped", identifier)
                continue
            for priority, code in languages:
                best = choices.get(code)
                if best is None or priority < best.priority:
                    choices[code] = _VoiceChoice(identifier, name, priority)
        return choices

    def _on_synth(self, wav: Any, count: int, events: Any) -> int:
        """espeak's synth callback: collect samples and events; return 1 to abort."""
        try:
            if wav and count > 0:
                self._chunks.append(ctypes.string_at(wav, count * 2))
            index = 0
            while events[index].type != _EVENT_LIST_TERMINATED:
                event = events[index]
                index += 1
                if event.type not in (_EVENT_WORD, _EVENT_PHONEME):
                    continue
                phoneme = ""
                if event.type == _EVENT_PHONEME:
                    phoneme = event.id.string.decode("utf-8", errors="replace")
                self._events.append(
                    _RawEvent(event.type, event.text_position, event.length, event.sample, phoneme)
                )
        except BaseException as e:  # an exception must not unwind through C code
            self._callback_error = e
            return 1
        return 0

    def select_voice(self, identifier: str) -> None:
        """Load a voice unless it is the current one (loading reads its dictionary)."""
        if identifier == self._current_voice:
            return
        status = self._lib.espeak_SetVoiceByName(identifier.encode())
        if status != 0:
            self._current_voice = None
            raise TtsError(f"espeak could not load voice {identifier!r} (status {status})")
        self._current_voice = identifier

    def set_rate_and_pitch(self, rate: int, pitch: int) -> None:
        """Words per minute and pitch (0-100) for the next synth (espeak keeps them set)."""
        for parameter, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch)):
            if self._lib.espeak_SetParameter(parameter, value, 0) != 0:
                raise TtsError(f"espeak_SetParameter({parameter}, {value}) failed")

    def synth(self, text: str) -> tuple[np.ndarray, list[_RawEvent]]:
        """Speak ``text`` with the current voice: int16 samples at ``rate`` and the events."""
        self._chunks, self._events, self._callback_error = [], [], None
        data = text.encode("utf-8") + b"\x00"
        status = self._lib.espeak_Synth(
            data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        chunks, events, error = self._chunks, self._events, self._callback_error
        self._chunks, self._events, self._callback_error = [], [], None
        if isinstance(error, Exception):
            raise TtsError(f"espeak synth callback failed: {error!r}") from error
        if error is not None:
            raise error  # KeyboardInterrupt and friends keep their meaning
        if status != 0:
            raise TtsError(f"espeak_Synth failed with status {status}")
        return np.frombuffer(b"".join(chunks), dtype=np.int16), events


def _parse_languages(address: int | None) -> list[tuple[int, str]]:
    """Decode espeak_VOICE.languages: (priority byte, NUL-terminated name) pairs, then NUL.

    Walked byte by byte because the list's length is only known from its terminator.
    """
    result: list[tuple[int, str]] = []
    while address:
        priority = ctypes.c_ubyte.from_address(address).value
        if priority == 0:
            break
        name = ctypes.string_at(address + 1)
        result.append((priority, name.decode(errors="replace").lower()))
        address += len(name) + 2
    return result


def _has_dictionary(data_path: Path, identifier: str, first_language: str) -> bool:
    """Whether the voice's pronunciation dictionary is in the data (fo, kaa ... are not).

    espeak uses the voice file's ``dictionary`` line, else its first language's code up to
    the first hyphen.
    """
    dictionary = first_language.split("-")[0]
    try:
        lines = (data_path / "lang" / identifier).read_text(errors="replace").splitlines()
    except OSError:
        return True  # not where we expect it; let espeak decide
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "dictionary":
            dictionary = words[1]
    return (data_path / f"{dictionary}_dict").is_file()


_LOCK = threading.Lock()
"""espeak-ng has one global synthesiser (voice, callback, buffers): every use holds this."""
_library: _Library | None = None


def _get_library() -> _Library:
    """The process's espeak, initialised on first use. Call with ``_LOCK`` held."""
    global _library
    if _library is None:
        _library = _Library()
    return _library


def _to_pipeline_rate(samples: np.ndarray, rate: int) -> np.ndarray:
    """int16 at ``rate`` -> float32 in [-1, 1] at SAMPLE_RATE."""
    audio = samples.astype(np.float32) / 32768.0
    if rate != SAMPLE_RATE and len(audio):
        divisor = gcd(SAMPLE_RATE, rate)
        audio = resample_poly(audio, SAMPLE_RATE // divisor, rate // divisor).astype(np.float32)
    # The polyphase filter may overshoot a little on full-scale plosives.
    return np.clip(audio, -1.0, 1.0)


def _marks(
    events: list[_RawEvent], total: int, rate: int
) -> tuple[tuple[PhonemeMark, ...], tuple[WordMark, ...]]:
    """Turn espeak events into marks in seconds; ``total`` is the audio length at ``rate``."""
    phoneme_events = [e for e in events if e.kind == _EVENT_PHONEME]
    phonemes: list[PhonemeMark] = []
    for i, event in enumerate(phoneme_events):
        if event.phoneme.startswith("_"):
            continue  # a pause: it only serves as the end of the phoneme before it
        following = phoneme_events[i + 1].sample if i + 1 < len(phoneme_events) else total
        start = min(max(event.sample, 0), total)
        end = min(max(following, start), total)
        if end > start:  # espeak reports zero-length phonemes at the very end
            phonemes.append(PhonemeMark(event.phoneme, start / rate, end / rate))
    words = tuple(
        WordMark(
            text_position=e.text_position - 1, length=e.length, start=min(e.sample, total) / rate
        )
        for e in events
        if e.kind == _EVENT_WORD
    )
    return tuple(phonemes), words


class EspeakTTS(TextToSpeech):
    """espeak-ng, offline, ~100 languages including ru, kk and en; robotic but instant.

    Thread-safe: all instances share one process-wide lock around the C library (which is
    global); resampling and bookkeeping run outside it. The library loads on first use.
    ``variant`` (``f3``, ``m3``: espeak-ng-data/voices/!v) recolours every voice, unlisted.
    """

    name: ClassVar[str] = "espeak"

    def __init__(self, variant: str | None = None) -> None:
        self._languages: list[Language] | None = None
        self._variant = f"+{variant}" if variant else ""  # espeak's "voice+variant" naming

    def warmup(self) -> None:
        """Load the library and the voice list now rather than on the first request."""
        self.languages()

    def languages(self) -> list[Language]:
        """Every language of every shipped espeak voice: ru, kk, en first, then by code."""
        if self._languages is None:
            with _LOCK:
                choices = dict(_get_library().choices)
            first = [code for code in FIRST_LANGUAGES if code in choices]
            rest = sorted(code for code in choices if code not in FIRST_LANGUAGES)
            self._languages = [
                Language(code, _NATIVE_NAMES.get(code, choices[code].espeak_name), "espeak")
                for code in first + rest
            ]
        return list(self._languages)

    def synthesize(self, text: str, language: str, options: VoiceOptions | None = None) -> Speech:
        """Speak ``text`` with espeak's best voice for ``language``; see the base class.
        ``speed`` scales espeak's 175 words per minute, ``pitch`` its pitch of 50."""
        code = self.check_request(text, language)
        self.check_voice(code, options)
        speed = options.speed if options is not None and options.speed else 1.0
        pitch = options.pitch if options is not None and options.pitch else 1.0
        rate = round(max(80, min(450, _DEFAULT_RATE * speed)))
        level = round(max(0, min(100, _DEFAULT_PITCH * pitch)))
        with _LOCK:
            library = _get_library()
            if self._variant and self._variant[1:] not in library.variants:
                raise ValueError(f"unknown espeak variant {self._variant[1:]!r}; see voices/!v")
            library.select_voice(library.choices[code].identifier + self._variant)
            library.set_rate_and_pitch(rate, level)
            samples, events = library.synth(text)
            rate = library.rate
        phonemes, words = _marks(events, len(samples), rate)
        pcm = _to_pipeline_rate(samples, rate)
        pcm.setflags(write=False)  # shared between sessions and threads
        log.debug(
            "espeak %s: %d chars -> %.2f s, %d phonemes", code, len(text), len(pcm) / SAMPLE_RATE,
            len(phonemes),
        )  # fmt: skip
        native = (samples.astype(np.float32) / 32768.0).reshape(-1, 1)
        native.setflags(write=False)
        source = SourceAudio(pcm=native, rate=rate)
        return Speech(pcm=pcm, phonemes=phonemes, words=words, language=code, source=source)


register_tts(EspeakTTS.name, EspeakTTS)
