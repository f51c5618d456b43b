"""Learning and measuring the sound templates of :mod:`inference.engines.viseme_sound`.

The labels come from a TTS's phoneme timeline, looked up exactly as the engine looks it up
(``phoneme_at``: ANTICIPATION ahead of the frame's centre), and the windows and silence flags
are built as the renderer and the live pipeline build them, so the templates learn what the
engine will see and the accuracy is measured on it. ``bench/vowels.py`` drives this with
espeak-ng speech; the tests use it on a voice the templates never heard.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import eigh

from inference.engines.viseme_analysis import phoneme_viseme, target_shape
from inference.engines.viseme_sound import (
    CLASS_OF_VISEME,
    LEVEL_FRAMES,
    LOOKAHEAD_FRAMES,
    SOUND_CLASSES,
    FeatureSpec,
    SoundTemplates,
    sound_features,
)
from inference.frames import PhonemeMark
from inference.lipsync import PhonemeTimeline, audio_for_frames, phoneme_at, window_rms
from inference.mel import frame_count, melspectrogram, window_for_frame

SILENCE_RMS = 0.004
"""EngineConfig.silence_rms's default: windows quieter than this never reach the classifier."""


def frame_viseme(phoneme: str | None) -> str:
    """The viseme a frame's phoneme asks for; no phoneme (a pause) is ``rest``."""
    return "rest" if phoneme is None else phoneme_viseme(phoneme)


def phoneme_key(phoneme: str | None) -> str:
    """The template a frame belongs to: espeak's mnemonic without stress marks and the
    softening ``;`` (``'o`` and ``o`` sound alike to a template), ``_`` for pauses."""
    return "_" if phoneme is None else phoneme.lstrip("',%=").rstrip(";") or ";"


@dataclass(frozen=True)
class LabelledFrames:
    """One utterance as the engine sees it, frame by frame, with what espeak says was said."""

    windows: np.ndarray
    """float32 (n, 80, 16): each video frame's mel window."""
    silent: np.ndarray
    """bool (n,): the 200 ms ending with the engine's look-ahead (``window_rms``) are below
    the silence threshold (the engine shows rest)."""
    phonemes: tuple[str | None, ...]
    """The phoneme the engine would have been given per frame (None in pauses)."""

    @property
    def classes(self) -> list[str]:
        """The true mouth class of each frame."""
        return [CLASS_OF_VISEME[frame_viseme(p)] for p in self.phonemes]


def labelled_frames(
    pcm: np.ndarray, marks: Sequence[PhonemeMark], silence_rms: float = SILENCE_RMS
) -> LabelledFrames:
    """Frames of ``pcm`` (16 kHz mono float32) labelled by the TTS's phoneme ``marks``."""
    count = frame_count(pcm.size)
    audio = audio_for_frames(pcm, count)
    mel = melspectrogram(audio)
    timeline = PhonemeTimeline(marks)
    windows = np.stack([window_for_frame(mel, i) for i in range(count)]) if count else None
    return LabelledFrames(
        windows=windows if windows is not None else np.zeros((0, 80, 16), np.float32),
        silent=np.array(
            [window_rms(audio, i, LOOKAHEAD_FRAMES) < silence_rms for i in range(count)], bool
        ),
        phonemes=tuple(phoneme_at(timeline, i) for i in range(count)),
    )


def predict_classes(templates: SoundTemplates, frames: LabelledFrames) -> list[str]:
    """The class of the viseme the engine shows for each frame of one stream without
    phonemes (its own ``target_shape``, frame by frame in order, one stream state)."""
    state: dict[str, object] = {}
    return [
        CLASS_OF_VISEME[target_shape(window, silent, None, state, templates)[0]]
        for window, silent in zip(frames.windows, frames.silent.tolist(), strict=True)
    ]


def confusion(templates: SoundTemplates, utterances: Sequence[LabelledFrames]) -> np.ndarray:
    """int (6, 6) counts: rows the true class, columns the predicted one (SOUND_CLASSES)."""
    matrix = np.zeros((len(SOUND_CLASSES), len(SOUND_CLASSES)), np.int64)
    for frames in utterances:
        truth = [SOUND_CLASSES.index(c) for c in frames.classes]
        guess = [SOUND_CLASSES.index(c) for c in predict_classes(templates, frames)]
        np.add.at(matrix, (truth, guess), 1)
    return matrix


def speech_level(utterances: Sequence[LabelledFrames]) -> float:
    """Mean level (as viseme_sound.running_level measures it) of the non-silent frames."""
    levels = [
        frames.windows[~frames.silent][:, :, :LEVEL_FRAMES].mean(axis=(1, 2))
        for frames in utterances
    ]
    return float(np.concatenate(levels).mean())


def _stream_features(spec: FeatureSpec, frames: LabelledFrames) -> np.ndarray:
    """Features of the non-silent frames of one stream, each with the running level the
    engine would have had there."""
    state: dict[str, object] = {}
    rows = [
        sound_features(window, state, spec)
        for window, silent in zip(frames.windows, frames.silent.tolist(), strict=True)
        if not silent
    ]
    return np.array(rows, np.float32).reshape(-1, spec.size)


def _template_keys(utterances: Sequence[LabelledFrames], min_frames: int) -> list[str]:
    """``viseme:phoneme`` per non-silent frame; phonemes with fewer than ``min_frames``
    frames share their viseme's ``viseme:*`` template."""
    keys = [
        f"{frame_viseme(p)}:{phoneme_key(p)}"
        for frames in utterances
        for p, silent in zip(frames.phonemes, frames.silent.tolist(), strict=True)
        if not silent
    ]
    counts = Counter(keys)
    return [k if counts[k] >= min_frames else k.split(":")[0] + ":*" for k in keys]


def _lda(x: np.ndarray, groups: np.ndarray, dims: int, regularisation: float) -> np.ndarray:
    """Directions (columns) that best separate ``groups`` of standardised ``x``, scaled so
    that the spread within a group is about one along each."""
    names, index = np.unique(groups, return_inverse=True)
    weights = np.bincount(index) / len(index)
    means = np.stack([x[index == k].mean(axis=0) for k in range(len(names))])
    centred = x - means[index]
    within = centred.T @ centred / len(x)
    spread = means - x.mean(axis=0)
    between = (spread * weights[:, None]).T @ spread
    _, vectors = eigh(between, within + regularisation * np.eye(x.shape[1]))
    return vectors[:, ::-1][:, :dims]


def learn_templates(
    utterances: Sequence[LabelledFrames],
    spec: FeatureSpec,
    dims: int = 20,
    min_frames: int = 20,
    regularisation: float = 0.1,
    source: dict[str, Any] | None = None,
) -> SoundTemplates:
    """Templates from labelled ``utterances`` (each one stream: the running level restarts).

    ``spec.level`` should be :func:`speech_level` of the same utterances. ``dims`` LDA
    directions are kept; ``regularisation`` is added to the standardised within-phoneme
    covariance (the features are strongly correlated, and a near-singular one would let
    the projection latch onto noise).
    """
    x = np.concatenate([_stream_features(spec, frames) for frames in utterances])
    keys = np.array(_template_keys(utterances, min_frames))
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    directions = _lda((x - mean) / scale, keys, dims, regularisation)
    projection = (directions / scale[:, None]).astype(np.float32)
    offset = (-(mean / scale) @ directions).astype(np.float32)
    points = x @ projection + offset
    names, index = np.unique(keys, return_inverse=True)
    counts = np.bincount(index)
    return SoundTemplates(
        spec=spec,
        projection=projection,
        offset=offset,
        means=np.stack([points[index == k].mean(axis=0) for k in range(len(names))]),
        log_priors=np.log(counts / counts.sum()).astype(np.float32),
        phonemes=tuple(str(n).split(":", 1)[1] for n in names),
        visemes=tuple(str(n).split(":", 1)[0] for n in names),
        source={**(source or {}), "frames": len(x)},
    )
