"""Vowels from sound: learn the viseme engine's sound templates and measure them.

    python bench/vowels.py learn      # espeak speech -> inference/engines/viseme_templates.json
    python bench/vowels.py measure    # held-out voices and sentences -> docs/benchmarks.md
    python bench/vowels.py measure --no-docs

``learn`` speaks bench/vowel_corpus.py's learning sentences (ru, kk, en) with its learning
voices, labels every video frame with the phoneme espeak says is spoken there (read as the
engine reads it), and writes the templates. ``measure`` classifies frame by frame, as the
engine does for speech without timings, the held-out sentences in the held-out voices, prints
per-language accuracy and the 6x6 confusion matrix, and replaces the section
"## Vowels from sound (bench/vowels.py)" of docs/benchmarks.md (unless --no-docs).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # allow `python bench/vowels.py` from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import scipy  # noqa: E402

from bench.report import DOCS, cpu_model, write_section  # noqa: E402
from bench.vowel_corpus import (  # noqa: E402
    HELD_OUT_TEXTS,
    HELD_OUT_VOICES,
    LEARN_GAINS,
    LEARN_TEXTS,
    LEARN_VOICES,
    Voice,
)
from inference.engines.viseme_analysis import audio_shape, classify  # noqa: E402
from inference.engines.viseme_sound import (  # noqa: E402
    CLASS_OF_VISEME,
    LOOKAHEAD_FRAMES,
    SOUND_CLASSES,
    TEMPLATES_PATH,
    FeatureSpec,
    SoundTemplates,
    load_templates,
    save_templates,
    sound_guess,
)
from inference.engines.viseme_sound_learn import (  # noqa: E402
    LabelledFrames,
    confusion,
    labelled_frames,
    learn_templates,
    speech_level,
)
from inference.tts import TextToSpeech, VoiceOptions, create_tts  # noqa: E402

SECTION = "## Vowels from sound (bench/vowels.py)"
LANGUAGES = ("ru", "kk", "en")
TARGET = 0.70
"""The issue's target frame accuracy on the six classes."""
SHOWN = {"a": "а", "o/u": "о/у", "i/e": "и/э", "m/b/p": "м/б/п"}
"""Class names as the docs show them (in Cyrillic), where they differ."""

_voices: dict[str | None, TextToSpeech] = {}


def speak(text: str, language: str, voice: Voice, gain: float = 1.0) -> LabelledFrames:
    """One utterance in ``voice``, scaled by ``gain``, as labelled frames."""
    tts = _voices.get(voice.variant)
    if tts is None:
        tts = _voices[voice.variant] = create_tts("espeak", variant=voice.variant)
    speech = tts.synthesize(text, language, VoiceOptions(speed=voice.speed, pitch=voice.pitch))
    return labelled_frames(np.asarray(speech.pcm) * np.float32(gain), speech.phonemes)


def corpus(
    texts: dict[str, tuple[str, ...]], voices: Sequence[Voice], gains: Sequence[float]
) -> Iterator[tuple[str, float, LabelledFrames]]:
    """(language, gain, frames) of every sentence in every voice, gains taken in turn."""
    turn = 0
    for language in LANGUAGES:
        for voice in voices:
            for text in texts[language]:
                gain = gains[turn % len(gains)]
                yield language, gain, speak(text, language, voice, gain)
                turn += 1


def band_energy_hits(frames: LabelledFrames) -> tuple[int, int]:
    """(right, frames) of the sound-only guess before the templates: band energies and
    spectral tilt (viseme_analysis.audio_shape + classify), silent frames closed."""
    guesses = [
        "closed" if silent else CLASS_OF_VISEME[classify(audio_shape(window).shape)]
        for window, silent in zip(frames.windows, frames.silent.tolist(), strict=True)
    ]
    return sum(g == c for g, c in zip(guesses, frames.classes, strict=True)), len(guesses)


def accuracy(matrix: np.ndarray) -> float:
    return float(np.trace(matrix) / max(1, matrix.sum()))


def learn(args: argparse.Namespace) -> None:
    began = time.perf_counter()
    spoken = list(corpus(LEARN_TEXTS, LEARN_VOICES, LEARN_GAINS))
    utterances = [frames for _, _, frames in spoken]
    # Streams are moved to espeak's own level, the loudness the opening rule was tuned on.
    native = [frames for _, gain, frames in spoken if gain == 1.0]
    spec = FeatureSpec(cepstra=20, frames=LOOKAHEAD_FRAMES, pool=2, level=speech_level(native))
    source = {
        "tts": "espeak-ng",
        "languages": list(LANGUAGES),
        "sentences": sum(len(LEARN_TEXTS[lang]) for lang in LANGUAGES),
        "voices": [str(v) for v in LEARN_VOICES],
        "gains": list(LEARN_GAINS),
        "learned_by": "python bench/vowels.py learn",
    }
    templates = learn_templates(
        utterances, spec, dims=args.dims, min_frames=args.min_frames, source=source
    )
    save_templates(templates, args.out)
    load_templates.cache_clear()
    matrix = confusion(templates, utterances)
    print(
        f"{len(templates.phonemes)} templates from {templates.source['frames']} frames "
        f"({len(utterances)} utterances) in {time.perf_counter() - began:.0f} s -> {args.out} "
        f"({args.out.stat().st_size / 1024:.0f} KB); accuracy on the learning set "
        f"{accuracy(matrix):.1%}"
    )


def table(matrix: np.ndarray) -> str:
    """The confusion matrix: counts and, in brackets, the share of the row."""
    names = [SHOWN.get(c, c) for c in SOUND_CLASSES]
    rows = [
        "| true \\ predicted | " + " | ".join(names) + " | frames | recall |",
        "|---|" + "---:|" * (len(names) + 2),
    ]
    for i, name in enumerate(names):
        total = int(matrix[i].sum())
        cells = [f"{n} ({n / max(1, total):.0%})" for n in matrix[i].tolist()]
        recall = matrix[i, i] / max(1, total)
        rows.append(f"| **{name}** | " + " | ".join(cells) + f" | {total} | {recall:.0%} |")
    return "\n".join(rows)


def largest_confusions(matrix: np.ndarray, count: int = 3) -> str:
    """The ``count`` largest off-diagonal shares of their row, e.g. 'и/э -> other 30%'."""
    shares = matrix / np.maximum(1, matrix.sum(axis=1, keepdims=True))
    np.fill_diagonal(shares, 0.0)
    order = np.argsort(shares, axis=None)[::-1][:count]
    names = [SHOWN.get(c, c) for c in SOUND_CLASSES]
    cells = [np.unravel_index(i, shares.shape) for i in order]
    return ", ".join(f"{names[r]} -> {names[c]} {shares[r, c]:.0%}" for r, c in cells)


def time_per_frame(templates: SoundTemplates, utterances: Sequence[LabelledFrames]) -> float:
    """Median microseconds of one sound_guess (features, level, templates) over the frames."""
    windows = [w for u in utterances for w in u.windows[~u.silent]][:2000]
    state: dict[str, object] = {}
    times = []
    for window in windows:
        start = time.perf_counter()
        sound_guess(window, state, templates)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e6)


def machine() -> str:
    return (
        f"nproc {os.cpu_count()}, {cpu_model()}; Python {platform.python_version()}, "
        f"numpy {np.__version__}, scipy {scipy.__version__}"
    )


def measure(args: argparse.Namespace) -> None:
    began = time.perf_counter()
    templates = load_templates(args.templates)
    per_language: dict[str, np.ndarray] = {}
    quiet: dict[str, np.ndarray] = {}
    held_out: list[LabelledFrames] = []
    band = np.zeros(2, np.int64)
    for language, _, frames in corpus(HELD_OUT_TEXTS, HELD_OUT_VOICES, (1.0,)):
        held_out.append(frames)
        per_language[language] = per_language.get(language, 0) + confusion(templates, [frames])
        band += band_energy_hits(frames)
    for language, _, frames in corpus(HELD_OUT_TEXTS, HELD_OUT_VOICES, (0.25,)):
        quiet[language] = quiet.get(language, 0) + confusion(templates, [frames])
    total = sum(per_language.values())
    assert isinstance(total, np.ndarray)
    quiet_total = sum(quiet.values())
    micros = time_per_frame(templates, held_out)
    elapsed = time.perf_counter() - began

    lines = [
        "| language | frames | accuracy | at -12 dB |",
        "|---|---:|---:|---:|",
        *(
            f"| {lang} | {int(per_language[lang].sum())} | {accuracy(per_language[lang]):.1%} "
            f"| {accuracy(quiet[lang]):.1%} |"
            for lang in LANGUAGES
        ),
        f"| **all** | {int(total.sum())} | **{accuracy(total):.1%}** "
        f"| {accuracy(np.asarray(quiet_total)):.1%} |",
    ]
    summary = "\n".join(lines)
    matrix = table(total)
    majority = total.sum(axis=1).max() / total.sum()
    print(summary, "\n", matrix, sep="\n")
    before = band[0] / max(1, band[1])
    print(
        f"\nsound_guess: {micros:.0f} us per frame (median); always 'other': {majority:.1%}; "
        f"band-energy guess (before): {before:.1%}"
    )
    if args.no_docs:
        return
    loss = 100 * (accuracy(total) - accuracy(np.asarray(quiet_total)))
    verdict = (
        f"meets the issue's target of {TARGET:.0%}"
        if accuracy(total) >= TARGET
        else f"**below the issue's target of {TARGET:.0%}**"
    )
    command = "python bench/vowels.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    source = templates.source
    body = (
        f"{SECTION}\n\n"
        "Frame accuracy of the viseme engine's sound-only path (speech without phoneme "
        "timings: microphone, uploads, remote TTS) on six mouth classes, against espeak-ng's "
        "own phoneme timeline read as the engine reads it (30 ms ahead of the frame's "
        "centre). Frames are classified one by one in stream order, as the engine does; "
        "frames whose window is below the silence threshold count as `closed` without "
        "asking the templates, as in the engine. Held out: "
        f"{sum(len(t) for t in HELD_OUT_TEXTS.values())} sentences and the voices "
        f"{', '.join(f'`{v}`' for v in HELD_OUT_VOICES)}; the templates "
        f"(`{TEMPLATES_PATH.relative_to(ROOT)}`, {len(templates.phonemes)} phoneme templates) "
        f"were learned by `python bench/vowels.py learn` from {source.get('sentences')} other "
        f"sentences in {len(source.get('voices', []))} other voices "
        f"({source.get('frames')} frames, gains {source.get('gains')}).\n\n"
        f"- command: `{command}` ({elapsed:.0f} s)\n"
        f"- machine: {machine()}\n"
        f"- date: {time.strftime('%Y-%m-%d')}\n\n"
        f"{summary}\n\n"
        f"Overall {accuracy(total):.1%}: {verdict}. "
        f"Always answering the commonest class (`other`) would score {majority:.1%}; the "
        "band-energy guess the engine used before the templates (loudness and spectral "
        f"tilt, `viseme_analysis.audio_shape` + `classify`) scores {before:.1%}. "
        "The -12 dB column is the same speech at a quarter of espeak's amplitude (a quiet "
        f"microphone): the classes hold within {loss:.1f} points because the running level "
        "normalisation finds it; "
        "how far the mouth opens follows the absolute loudness, as with phoneme timings, so "
        "that mouth opens less.\n\n"
        "Confusion matrix, all three languages (rows: what espeak said; columns: what the "
        "sound gave):\n\n"
        f"{matrix}\n\n"
        f"Cost: {micros:.0f} us per frame (median, one core, numpy; features, level and "
        "templates).\n\n"
        f"What limits it. The largest confusions are {largest_confusions(total)}. `other` "
        "holds espeak's schwa `@` (frequent in kk and en) and the sonorants r, l, n, j, "
        "which sound like vowels; vowels shade into their neighbours over the 75 ms the "
        "features cover; `closed` frames that reach the templates at all are the edges of "
        "pauses (the silence test spans the 200 ms ending with the engine's look-ahead, so "
        "the first 125 ms of a pause still reach them). Everything here is espeak, "
        "a formant synthesiser, in voices the templates did not hear: real voices through "
        "a microphone were not measured (no phoneme-labelled recordings here) and are "
        "likely to score lower. espeak is not bit-identical between runs (its pitch flutter), so a "
        "rerun moves these figures by a few tenths of a percent. The features and the method "
        "were chosen on other espeak voices and sentences (since folded into the learning "
        "set); settings compared on this held-out set as well: 20 vs 16 LDA directions and "
        "a level prior of 4 vs 10 frames (within 1 point of each other), and the features' "
        "span: the engine reads the first 6 mel frames (75 ms) of each window, its "
        "look-ahead, so that a microphone's frame is ready 47.5 ms after its audio instead "
        "of 172.5 ms; 12 mel frames (150 ms, the templates before) scored 73.8% "
        "(71.7% at -12 dB), one to two points more, and a silence test over the look-ahead "
        "alone 72.9% (67.4% at -12 dB: quiet stretches inside words read as pauses).\n"
    )
    write_section(SECTION, body)
    print(f"\nupdated {DOCS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    learning = commands.add_parser("learn", help="learn the templates from espeak's speech")
    learning.add_argument("--out", type=Path, default=TEMPLATES_PATH, help="templates file")
    learning.add_argument("--dims", type=int, default=20, help="LDA directions kept")
    learning.add_argument(
        "--min-frames", type=int, default=20, help="frames a phoneme needs for its own template"
    )
    measuring = commands.add_parser("measure", help="accuracy on held-out voices and sentences")
    measuring.add_argument("--templates", type=Path, default=TEMPLATES_PATH)
    measuring.add_argument("--no-docs", action="store_true", help="do not touch the docs")
    args = parser.parse_args()
    learn(args) if args.command == "learn" else measure(args)


if __name__ == "__main__":
    main()
