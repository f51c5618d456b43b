"""From sound to mouth shape: phoneme->viseme mapping, loudness, temporal smoothing.

Used by the weight-free ``viseme`` engine; the shape of speech without phonemes comes from
viseme_sound.py. Everything here is pure numpy and cheap (tens of microseconds per frame at
most), so it runs inside the engine's batch loop.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import librosa
import numpy as np

from inference.engines.viseme_sound import (
    LOOKAHEAD_FRAMES,
    SoundTemplates,
    sound_guess,
    sound_shape,
)
from inference.visemes import VISEMES, MouthShape

# espeak-ng mnemonics (ru, kk, en voices) by the mouth shape they need. Stress marks and the
# palatalisation suffix ';' are stripped before lookup; anything unlisted is a consonant.
_PHONEME_VISEMES: dict[str, str] = {}
for _viseme, _phonemes in {
    "MBP": "p b m",
    "FV": "f v",
    "AA": "a A A: aa a# V & aI aU ja 3 3: @- E# a: A@ aI@ aI3 aU@",
    "EE": "e E i i: I e@ eI y i@3 i@ I2 I# ji je",
    "OO": "o O O: oU 8 OI 0 o@ O@ 0#",
    "UU": "u u: U u# w U@ ju W y#",
    "CONS": "@ t d n l s z k g r tS dZ S Z x h ts q G N L * j T D",
}.items():
    for _p in _phonemes.split():
        _PHONEME_VISEMES[_p] = _viseme


def phoneme_viseme(phoneme: str) -> str:
    """The viseme for an espeak phoneme mnemonic (``'e`` -> EE, ``m;`` -> MBP, ``_`` -> rest)."""
    core = phoneme.lstrip("',%=").rstrip(";")
    if not phoneme or core.startswith("_"):
        return "rest"
    # A lone ';' (espeak reports a consonant's softening as its own event: "Привет" gives
    # r ; i v ; 'e) is speech, not a pause, so it falls through to CONS.
    return _PHONEME_VISEMES.get(core, "CONS")


_NOW_WEIGHTS = np.array([0.10, 0.22, 0.26, 0.22, 0.12, 0.08], np.float32)
"""Weights of the window's first mel frames (12.5 ms apart). The window starts at the video
frame's time, so these cover the 40 ms the frame is on screen plus a little look-ahead: lips
move slightly before the sound they make. Exactly the engine's LOOKAHEAD_FRAMES."""


@lru_cache(maxsize=1)
def _bands() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    freqs = librosa.mel_frequencies(n_mels=80, fmin=55, fmax=7600)

    def band(lo: float, hi: float) -> np.ndarray:
        return (freqs >= lo) & (freqs < hi)

    # voice: where speech loudness lives; f1: jaw opening raises the first formant;
    # low/high: second-formant region, high for spread vowels (e, i), low for rounded (o, u).
    return band(250, 3000), band(500, 1100), band(200, 900), band(1700, 3500)


@dataclass(frozen=True)
class AudioShape:
    """What the sound under one frame says about the mouth."""

    loudness: float
    """0 silent .. 1 loud speech."""
    shape: MouthShape


def audio_shape(mel: np.ndarray) -> AudioShape:
    """Mouth shape from a (80, 16) normalised mel window, using its first 75 ms (the
    engine's look-ahead; a product that fails if the weights ever read more)."""
    now = mel[:, :LOOKAHEAD_FRAMES] @ _NOW_WEIGHTS / _NOW_WEIGHTS.sum()
    db = (now + 4.0) * (100.0 / 8.0) - 100.0  # undo the [-4, 4] normalisation
    voice, f1, low, high = _bands()
    level = float(db[voice].mean())
    loudness = float(np.clip((level + 80.0) / 25.0, 0.0, 1.0))
    jaw = float(np.clip((db[f1].mean() - level + 4.0) / 10.0, 0.0, 1.0))
    tilt = float(db[high].mean() - db[low].mean())
    # Spectral shape means nothing without sound: a silent window has tilt 0, which would
    # otherwise read as fully spread lips. Scale both by loudness.
    wide = loudness * float(np.clip((tilt + 14.0) / 10.0, 0.0, 1.0))
    rounded = loudness * float(np.clip((-tilt - 18.0) / 10.0, 0.0, 1.0))
    opening = loudness * (0.45 + 0.55 * jaw)
    return AudioShape(loudness, MouthShape(open=opening, wide=wide, round=rounded))


def classify(shape: MouthShape) -> str:
    """Nearest viseme for a band-energy shape (:func:`audio_shape`): the sound-only guess the
    engine made before viseme_sound.py, kept as bench/vowels.py's baseline."""
    if shape.open < 0.12:
        return "rest"
    if shape.round > 0.5:
        return "OO" if shape.open > 0.45 else "UU"
    if shape.wide > 0.65:
        return "EE"
    return "AA" if shape.open > 0.5 else "CONS"


def opening_gain(loudness: float) -> float:
    """How much of a viseme's opening a frame of this loudness shows (0 when inaudible)."""
    return 0.0 if loudness < 0.05 else 0.55 + 0.45 * loudness


def target_shape(
    mel: np.ndarray,
    silent: bool,
    phoneme: str | None,
    state: dict[str, object] | None = None,
    templates: SoundTemplates | None = None,
) -> tuple[str, MouthShape]:
    """The viseme and shape a frame should show.

    With a TTS phoneme the phoneme decides the shape; without one (a microphone, an upload,
    a TTS without timings) the sound's templates do (:mod:`viseme_sound`: rounded for о/у,
    spread for и/э, closed lips for м/б/п), keeping their running level in the stream's
    ``state``. Either way the loudness decides how far it opens (so shouting opens wider).
    """
    if silent:
        return "rest", VISEMES["rest"]
    gain = opening_gain(audio_shape(mel).loudness)
    if phoneme is not None:
        viseme = phoneme_viseme(phoneme)
        base = VISEMES[viseme]
    else:
        viseme, base = sound_shape(sound_guess(mel, state, templates))
        if gain == 0.0:
            # Too quiet to open: show the winner's own lips (pressed, spread, rounded or at
            # rest) rather than a blend, so a closed mouth does not drift between shapes.
            base = VISEMES[viseme]
    return viseme, replace(base, open=base.open * gain)


ATTACK = 0.75
"""Fraction of the way to a larger opening covered per frame (fast: lips open quickly)."""
RELEASE = 0.5
"""Fraction of the way to a smaller opening covered per frame (slower closing)."""
DEADBAND = 0.02
"""Changes smaller than this are ignored so a steady vowel does not shimmer."""
MIN_HOLD_FRAMES = 2
"""Frames a drawn character's mouth picture stays up at least (80 ms), as sprite lip-sync
tools hold theirs: shorter visemes would flicker, and blending two pictures instead shows
ghosted double outlines."""


def _approach(current: float, target: float) -> float:
    if abs(target - current) < DEADBAND:
        return current
    rate = ATTACK if target > current else RELEASE
    return current + (target - current) * rate


def smooth_shape(previous: MouthShape | None, target: MouthShape) -> MouthShape:
    """One step of attack/release smoothing from the last shown shape towards ``target``."""
    if previous is None:
        return target
    return MouthShape(
        open=_approach(previous.open, target.open),
        wide=_approach(previous.wide, target.wide),
        round=_approach(previous.round, target.round),
        press=_approach(previous.press, target.press),
    )


@dataclass(frozen=True)
class SpriteState:
    """The mouth picture a drawn character shows and for how many frames it has."""

    viseme: str
    held: int = 1


def hold_viseme(previous: SpriteState | None, viseme: str) -> SpriteState:
    """The picture to show next: ``viseme``, once the shown one has been up for
    MIN_HOLD_FRAMES; pictures switch whole, never blended. The phonemes are already looked up
    ahead of the sound (inference/lipsync.py ANTICIPATION), so a switch leads its sound."""
    if previous is None:
        return SpriteState(viseme)
    if viseme == previous.viseme or previous.held < MIN_HOLD_FRAMES:
        return SpriteState(previous.viseme, previous.held + 1)
    return SpriteState(viseme)
