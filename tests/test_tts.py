"""Tests of the TTS seam and the espeak-ng backend (espeak speaks in a few ms: no fixtures)."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest

from inference.frames import SAMPLE_RATE
from inference.tts import (
    EspeakTTS,
    Speech,
    available_tts,
    create_tts,
    split_sentences,
)

SAMPLES = {
    "ru": ("Привет! Как дела?", ["Привет", "Как", "дела"]),
    "kk": ("Сәлеметсіз бе", ["Сәлеметсіз", "бе"]),
    "en": ("Hello there", ["Hello", "there"]),
}


@pytest.fixture(scope="module")
def tts() -> EspeakTTS:
    engine = create_tts("espeak")
    assert isinstance(engine, EspeakTTS)
    return engine


def frame_rms(pcm: np.ndarray, frame: int = 160) -> np.ndarray:
    usable = len(pcm) // frame * frame
    frames = pcm[:usable].astype(np.float64).reshape(-1, frame)
    return np.sqrt((frames**2).mean(axis=1))


@pytest.mark.parametrize("language", list(SAMPLES))
def test_speech_has_audio_and_ordered_marks(tts: EspeakTTS, language: str) -> None:
    text, words = SAMPLES[language]
    speech = tts.synthesize(text, language)

    assert speech.language == language
    assert speech.pcm.dtype == np.float32 and speech.pcm.ndim == 1
    assert 0.3 < speech.duration < 5.0
    assert speech.duration == pytest.approx(len(speech.pcm) / SAMPLE_RATE)
    assert np.abs(speech.pcm).max() <= 1.0
    assert np.abs(speech.pcm).max() > 0.1

    marks = speech.phonemes
    assert len(marks) >= 2 * len(words)
    for mark in marks:
        assert 0.0 <= mark.start < mark.end <= speech.duration + 1e-9
        assert mark.phoneme and not mark.phoneme.startswith("_")
        assert mark.phoneme.isascii()  # espeak mnemonics, not IPA
    for before, after in itertools.pairwise(marks):
        assert before.start < after.start
        assert before.end <= after.start + 1e-9

    assert [text[w.text_position : w.text_position + w.length] for w in speech.words] == words
    starts = [w.start for w in speech.words]
    assert starts == sorted(starts) and all(0.0 <= s < speech.duration for s in starts)


@pytest.mark.parametrize("language", list(SAMPLES))
def test_phonemes_line_up_with_audio_energy(tts: EspeakTTS, language: str) -> None:
    speech = tts.synthesize(SAMPLES[language][0], language)
    pcm = speech.pcm.astype(np.float64)
    covered = np.zeros(len(pcm), dtype=bool)
    for mark in speech.phonemes:
        covered[int(mark.start * SAMPLE_RATE) : int(mark.end * SAMPLE_RATE)] = True
    inside = np.sqrt(np.mean(pcm[covered] ** 2))
    outside = pcm[~covered]
    if len(outside) >= SAMPLE_RATE // 100:  # leading/trailing silence and pauses, if any
        assert np.sqrt(np.mean(outside**2)) < 0.05 * inside

    # Speech starts and stops where the marks say, within a couple of video frames.
    rms = frame_rms(speech.pcm)  # 10 ms frames
    loud = np.flatnonzero(rms > 0.1 * rms.max())
    onset, offset = loud[0] / 100, (loud[-1] + 1) / 100
    assert abs(onset - speech.phonemes[0].start) < 0.08
    assert abs(offset - speech.phonemes[-1].end) < 0.08
    loudest = (np.argmax(rms) + 0.5) / 100
    assert any(m.start <= loudest <= m.end for m in speech.phonemes)


def test_pause_between_sentences_is_silent_and_unmarked(tts: EspeakTTS) -> None:
    speech = tts.synthesize("Привет! Как дела?", "ru")
    gaps = [
        (a.end, b.start) for a, b in itertools.pairwise(speech.phonemes) if b.start - a.end > 0.1
    ]
    assert len(gaps) == 1  # the pause after "Привет!"
    start, end = gaps[0]
    pause = speech.pcm[int(start * SAMPLE_RATE) + 80 : int(end * SAMPLE_RATE) - 80]
    assert np.sqrt(np.mean(pause.astype(np.float64) ** 2)) < 0.005


def test_russian_mnemonics_are_espeaks(tts: EspeakTTS) -> None:
    # The viseme mapping is written against these names; a new espeak data set may rename them.
    speech = tts.synthesize("Привет", "ru")
    assert [m.phoneme for m in speech.phonemes] == ["p", "@-", "r", ";", "i", "v", ";", "'e", "t"]


def test_word_positions_index_the_given_text(tts: EspeakTTS) -> None:
    text = "  Hello,  there"
    speech = tts.synthesize(text, "en")
    assert [(w.text_position, w.length) for w in speech.words] == [(2, 5), (10, 5)]


def test_unknown_language_is_rejected(tts: EspeakTTS) -> None:
    with pytest.raises(ValueError, match=r"unknown language 'xx-nope'.*ru"):
        tts.synthesize("Hello", "xx-nope")


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_text_is_rejected(tts: EspeakTTS, text: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        tts.synthesize(text, "en")


def test_nul_in_text_is_rejected(tts: EspeakTTS) -> None:
    with pytest.raises(ValueError, match="NUL"):
        tts.synthesize("Hello\x00there", "en")


def test_language_codes_are_case_insensitive(tts: EspeakTTS) -> None:
    assert tts.synthesize("Привет", "RU").language == "ru"
    assert tts.synthesize("Hello", "en_US").language == "en-us"


def test_languages_put_ru_kk_en_first_with_native_names(tts: EspeakTTS) -> None:
    languages = tts.languages()
    assert [(lang.code, lang.name) for lang in languages[:3]] == [
        ("ru", "Русский"),
        ("kk", "Қазақша"),
        ("en", "English"),
    ]
    codes = [lang.code for lang in languages]
    assert len(codes) == len(set(codes)) > 100
    assert codes[3:] == sorted(codes[3:])
    assert {"en-us", "en-gb", "uk", "de", "zh"} <= set(codes)
    assert all(lang.name for lang in languages)


def test_every_listed_language_speaks(tts: EspeakTTS) -> None:
    # espeak accepts voices whose dictionary is not shipped and then says nothing; those
    # must not be listed.
    silent = [
        lang.code for lang in tts.languages() if not tts.synthesize("test 1", lang.code).phonemes
    ]
    assert silent == []


def test_factory_and_registry() -> None:
    assert "espeak" in available_tts()
    assert isinstance(create_tts(), EspeakTTS)
    with pytest.raises(ValueError, match=r"unknown TTS 'nope'.*espeak"):
        create_tts("nope")


def spectral_centroid(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    return float((spectrum * np.fft.rfftfreq(pcm.size, 1 / SAMPLE_RATE)).sum() / spectrum.sum())


def test_variants_recolour_the_voice_and_unknown_ones_are_refused(tts: EspeakTTS) -> None:
    # bench/vowels.py learns the viseme engine's sound templates in espeak's variants.
    text = "Мама мыла раму"
    plain = tts.synthesize(text, "ru")
    female = create_tts("espeak", variant="f3").synthesize(text, "ru")
    again = tts.synthesize(text, "ru")  # one global synthesiser: the variant must not stick
    assert [m.phoneme for m in female.phonemes] == [m.phoneme for m in plain.phonemes]
    # f3 scales the formants by 1.2-1.35 (measured centroid: 1370 -> 1650 Hz).
    assert spectral_centroid(female.pcm) > 1.1 * spectral_centroid(plain.pcm)
    assert spectral_centroid(again.pcm) == pytest.approx(spectral_centroid(plain.pcm), rel=0.03)
    assert tts.voices("ru") == []  # variants are not voices a request can name
    with pytest.raises(ValueError, match="unknown espeak variant 'zz'"):
        create_tts("espeak", variant="zz").synthesize(text, "ru")


def test_speech_rejects_wrong_audio_layout() -> None:
    with pytest.raises(ValueError, match="float32"):
        Speech(pcm=np.zeros((10, 2), np.float32), phonemes=(), words=(), language="en")
    with pytest.raises(ValueError, match="float32"):
        Speech(pcm=np.zeros(10, np.int16), phonemes=(), words=(), language="en")
    assert Speech(np.zeros(8000, np.float32), (), (), "en").duration == pytest.approx(0.5)


def envelope(pcm: np.ndarray) -> np.ndarray:
    return frame_rms(pcm, 320)


def test_concurrent_synthesis_matches_sequential(tts: EspeakTTS) -> None:
    # espeak carries a little pitch state from one utterance to the next, so the same text is
    # never bit-identical twice; a race inside the C library would instead mix utterances.
    # So: same phonemes and words, timings within a few ms, the same loudness envelope.
    jobs = [(text, lang) for lang, (text, _) in SAMPLES.items()]
    sequential = {job: tts.synthesize(*job) for job in jobs}
    results: list[tuple[tuple[str, str], Speech]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker(offset: int) -> None:
        try:
            barrier.wait()
            for i in range(6):
                job = jobs[(offset + i) % len(jobs)]
                results.append((job, tts.synthesize(*job)))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert len(results) == 24

    for job, speech in results:
        expected = sequential[job]
        assert [m.phoneme for m in speech.phonemes] == [m.phoneme for m in expected.phonemes]
        assert [(w.text_position, w.length) for w in speech.words] == [
            (w.text_position, w.length) for w in expected.words
        ]
        assert speech.duration == pytest.approx(expected.duration, abs=0.025)
        for got, want in zip(speech.phonemes, expected.phonemes, strict=True):
            assert got.start == pytest.approx(want.start, abs=0.025)
        a, b = envelope(speech.pcm), envelope(expected.pcm)
        n = min(len(a), len(b))
        assert np.corrcoef(a[:n], b[:n])[0, 1] > 0.85


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Привет! Как дела? Всё хорошо.", ["Привет!", "Как дела?", "Всё хорошо."]),
        (
            "Сәлеметсіз бе! Қалыңыз қалай? Рақмет, жақсы.",
            ["Сәлеметсіз бе!", "Қалыңыз қалай?", "Рақмет, жақсы."],
        ),
        ("Әке. Ұл келді. Үй үлкен.", ["Әке.", "Ұл келді.", "Үй үлкен."]),
        ("Hello there. How are you?! Fine…", ["Hello there.", "How are you?!", "Fine…"]),
        ("Число пи равно 3.14. Это известно.", ["Число пи равно 3.14.", "Это известно."]),
        ("Pi is 3.14159 and e is 2.718", ["Pi is 3.14159 and e is 2.718"]),
        ("без знаков препинания", ["без знаков препинания"]),
        ("Mr. Smith met Dr. Who. They talked.", ["Mr. Smith met Dr. Who.", "They talked."]),
        (
            "Это было в 2020 г. в Москве. Т.е. давно.",
            ["Это было в 2020 г. в Москве.", "Т.е. давно."],
        ),
        ("А. С. Пушкин родился в 1799 году.", ["А. С. Пушкин родился в 1799 году."]),
        ("Ну... ладно. Пока!", ["Ну... ладно.", "Пока!"]),
        ("Он сказал: «Стой!» Потом ушёл.", ["Он сказал: «Стой!»", "Потом ушёл."]),
        ("one\ntwo\n\n  three.  ", ["one", "two", "three."]),
        ("1. Первый пункт.\n2. Второй пункт.", ["1. Первый пункт.", "2. Второй пункт."]),
        ("", []),
        ("  \n ", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected
