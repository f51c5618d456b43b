"""Mouth shapes from sound alone, for speech that comes without phoneme timings.

A microphone, an uploaded file or a TTS that reports no timings gives the viseme engine only
the mel window. Following uLipSync's idea (compare the sound's MFCC-like features with one
template per phoneme, take the nearest), each frame is classified into one of six mouth
classes: closed, а, о/у, и/э, м/б/п, other.

- Features: the DCT over the 80 log-mel bands (cepstra) of the window's first 6 mel frames
  (75 ms from the frame's time, the engine's whole look-ahead: LOOKAHEAD_FRAMES), averaged
  in pairs. A live stream so hands the engine frame ``i`` 47.5 ms after its own audio
  instead of Wav2Lip's 172.5 ms (inference/live.py); reading 12 mel frames (150 ms) scored
  about two points better on bench/vowels.py's held-out speech, not worth 75 ms more delay.
- Level: c0 is shifted by how far the stream's running speech level is from the level the
  templates were learned at (at most 20 dB), so a quiet microphone's vowels are not read as
  pauses. Only the classification sees this shift: how far the mouth opens stays the
  engine's loudness rule, as with phoneme timings.
- Templates: the mean of every espeak phoneme (and one for pauses) after a linear projection
  (LDA) in which each phoneme's spread is about one, so a plain squared distance is a
  normalised one. Softmax over ``log prior - distance / 2`` gives a posterior per template,
  summed per class; the class with the largest sum wins and its sum is the confidence.

The templates are learned by ``python bench/vowels.py learn`` from espeak-ng's own
phoneme-labelled speech in several voices and stored in ``viseme_templates.json`` next to
this file. Cost per frame: three small matrix products (DCT, pooling, projection), distances
to ~70 templates and a softmax: tens of microseconds in numpy (docs/benchmarks.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy.fft import dct

from inference.visemes import VISEMES, MouthShape

TEMPLATES_PATH = Path(__file__).with_name("viseme_templates.json")
"""The shipped templates (our own data, derived from espeak-ng's speech)."""
FORMAT = 1
"""Version of the templates file; a different one is refused with a hint to re-learn."""

SOUND_CLASSES: tuple[str, ...] = ("closed", "a", "o/u", "i/e", "m/b/p", "other")
"""The six mouth classes the sound is sorted into (the issue's: closed, а, о/у, и/э,
м/б/п closed lips, everything else)."""

CLASS_OF_VISEME: dict[str, str] = {
    "rest": "closed",
    "AA": "a",
    "OO": "o/u",
    "UU": "o/u",
    "EE": "i/e",
    "MBP": "m/b/p",
    "CONS": "other",
    "FV": "other",
}
"""Which class each viseme of :data:`inference.visemes.VISEMES` belongs to."""

LOOKAHEAD_FRAMES = 6
"""Mel frames of the window the viseme engine reads, from the frame's start (75 ms): the
features, the level (LEVEL_FRAMES) and the loudness (viseme_analysis.audio_shape) all fit in
them. The engine's ``lookahead_frames``; templates that read more are refused."""
LEVEL_PRIOR_FRAMES = 4
"""The learned speech level counts as this many frames of evidence: a new stream weighs its
own level more than the learned one after 160 ms (bench/vowels.py measured 4 a little better
than 10 on quiet speech, and the same at espeak's loudness)."""
LEVEL_MEMORY_FRAMES = 250
"""At most this many frames (10 s) weigh in the running level, so it follows a speaker who
moves closer to the microphone or a gain change."""
LEVEL_FRAMES = 4
"""Mel frames at the start of the window whose mean is one frame's level (its 40 ms)."""
MAX_LEVEL_SHIFT = 1.6
"""Largest level correction, in normalised mel units (8 per 100 dB: 20 dB). Enough for a
quiet microphone; not enough to raise background hiss to the level of speech."""


@dataclass(frozen=True)
class FeatureSpec:
    """How a mel window becomes a feature vector (fixed when the templates are learned)."""

    cepstra: int
    """DCT coefficients kept per mel frame, c0 (level) included."""
    frames: int
    """Mel frames used from the start of the window."""
    pool: int
    """Consecutive mel frames averaged into one time step."""
    level: float
    """The level every stream is moved to: mean normalised log-mel (see LEVEL_FRAMES) of
    the learning speech's non-silent frames at espeak's own loudness."""

    @property
    def size(self) -> int:
        """Length of the feature vector."""
        return self.cepstra * (self.frames // self.pool)

    def features(self, mel: np.ndarray, shift: float) -> np.ndarray:
        """Feature vector of an (80, 16) window raised by ``shift`` (normalised mel units)."""
        bands = mel.shape[0]
        cep = _dct_matrix(self.cepstra, bands) @ mel[:, : self.frames] @ _pooling(self)
        # A constant shift of every band moves only c0, by sqrt(bands) times the shift.
        cep[0] += shift * np.sqrt(bands)
        return cep.ravel()


@lru_cache(maxsize=4)
def _dct_matrix(count: int, bands: int) -> np.ndarray:
    """Rows of the orthonormal DCT-II over ``bands``, as a matrix (float32)."""
    return dct(np.eye(bands), type=2, norm="ortho", axis=0)[:count].astype(np.float32)


@lru_cache(maxsize=4)
def _pooling(spec: FeatureSpec) -> np.ndarray:
    """(frames, steps) matrix averaging runs of ``pool`` frames (a product beats a mean)."""
    steps = np.arange(spec.frames) // spec.pool
    matrix = steps[:, None] == np.arange(spec.frames // spec.pool)[None, :]
    return (matrix / spec.pool).astype(np.float32)


@dataclass(frozen=True)
class SoundGuess:
    """What the sound of one frame says about the mouth."""

    sound_class: str
    """One of :data:`SOUND_CLASSES`."""
    confidence: float
    """Posterior of that class, 1/6 .. 1."""
    visemes: dict[str, float]
    """Posterior per viseme name (summing to 1), for blending mouth shapes."""


@dataclass(frozen=True, eq=False)
class SoundTemplates:
    """Learned templates: a projection and one mean per phoneme, each with its viseme."""

    spec: FeatureSpec
    projection: np.ndarray
    """float32 (spec.size, dims): features -> the normalised template space."""
    offset: np.ndarray
    """float32 (dims,): added after the projection (it centres and scales the features)."""
    means: np.ndarray
    """float32 (templates, dims): one row per phoneme."""
    log_priors: np.ndarray
    """float32 (templates,): log of each phoneme's share of the learning frames."""
    phonemes: tuple[str, ...]
    """espeak mnemonic per template (``_`` for pauses, ``*`` for a viseme's rare ones)."""
    visemes: tuple[str, ...]
    """Viseme per template, a key of VISEMES."""
    source: dict[str, Any]
    """What the templates were learned from (voices, texts, frames), for the record."""
    _class_index: np.ndarray = field(init=False, repr=False)
    _viseme_names: tuple[str, ...] = field(init=False, repr=False)
    _viseme_index: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.spec.frames > LOOKAHEAD_FRAMES:
            raise ValueError(
                f"templates read {self.spec.frames} mel frames, more than the engine's "
                f"look-ahead of {LOOKAHEAD_FRAMES}; re-learn them with 'python bench/vowels.py "
                "learn'"
            )
        unknown = set(self.visemes) - set(VISEMES)
        if unknown:
            raise ValueError(f"templates name unknown visemes {sorted(unknown)}")
        dims = self.projection.shape[1]
        if self.projection.shape[0] != self.spec.size or self.offset.shape != (dims,):
            raise ValueError(
                f"templates' projection is {self.projection.shape}, expected ({self.spec.size}, "
                f"d) for {self.spec}; re-learn them with 'python bench/vowels.py learn'"
            )
        count = len(self.phonemes)
        if self.means.shape != (count, dims) or self.log_priors.shape != (count,):
            raise ValueError("templates' means, priors and names disagree in number")
        # Index arrays so that summing posteriors per class and per viseme is two bincounts.
        classes = [SOUND_CLASSES.index(CLASS_OF_VISEME[v]) for v in self.visemes]
        names = tuple(sorted(set(self.visemes)))
        object.__setattr__(self, "_class_index", np.array(classes))
        object.__setattr__(self, "_viseme_names", names)
        object.__setattr__(self, "_viseme_index", np.array([names.index(v) for v in self.visemes]))

    def classify(self, features: np.ndarray) -> SoundGuess:
        """Classify one frame's feature vector (:func:`sound_features`)."""
        point = features @ self.projection + self.offset
        scores = self.log_priors - 0.5 * np.square(self.means - point).sum(axis=1)
        posterior = np.exp(scores - scores.max())
        posterior /= posterior.sum()
        per_class = np.bincount(self._class_index, posterior, minlength=len(SOUND_CLASSES))
        per_viseme = np.bincount(self._viseme_index, posterior, minlength=len(self._viseme_names))
        best = int(per_class.argmax())
        visemes = dict(zip(self._viseme_names, per_viseme.tolist(), strict=True))
        return SoundGuess(SOUND_CLASSES[best], float(per_class[best]), visemes)

    def to_json(self) -> dict[str, Any]:
        """The file's content (numbers rounded to 4 significant digits)."""

        def rounded(a: np.ndarray) -> Any:
            return [float(f"{x:.4g}") for x in a.ravel().tolist()]

        return {
            "format": FORMAT,
            "classes": list(SOUND_CLASSES),
            "spec": {
                "cepstra": self.spec.cepstra,
                "frames": self.spec.frames,
                "pool": self.spec.pool,
                "level": round(self.spec.level, 5),
            },
            "dims": int(self.projection.shape[1]),
            "projection": rounded(self.projection),
            "offset": rounded(self.offset),
            "templates": [
                {"phoneme": p, "viseme": v, "log_prior": round(float(lp), 5), "mean": rounded(m)}
                for p, v, lp, m in zip(
                    self.phonemes, self.visemes, self.log_priors, self.means, strict=True
                )
            ],
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SoundTemplates:
        """Templates from :meth:`to_json`'s content; ValueError naming what does not fit."""
        if data.get("format") != FORMAT or tuple(data.get("classes", ())) != SOUND_CLASSES:
            raise ValueError(
                f"viseme templates have format {data.get('format')!r} and classes "
                f"{data.get('classes')!r}; expected format {FORMAT} and {list(SOUND_CLASSES)}: "
                "re-learn them with 'python bench/vowels.py learn'"
            )

        def array(values: Any, *shape: int) -> np.ndarray:
            return np.asarray(values, np.float32).reshape(shape)

        try:
            spec = FeatureSpec(**data["spec"])
            dims = int(data["dims"])
            rows = data["templates"]
            return cls(
                spec=spec,
                projection=array(data["projection"], spec.size, dims),
                offset=array(data["offset"], dims),
                means=array([r["mean"] for r in rows], len(rows), dims),
                log_priors=array([r["log_prior"] for r in rows], len(rows)),
                phonemes=tuple(r["phoneme"] for r in rows),
                visemes=tuple(r["viseme"] for r in rows),
                source=dict(data.get("source", {})),
            )
        except (KeyError, TypeError, ValueError) as e:  # a missing field, a wrong size
            raise ValueError(
                f"viseme templates do not fit ({e!r}); re-learn them with "
                "'python bench/vowels.py learn'"
            ) from e


def save_templates(templates: SoundTemplates, path: Path = TEMPLATES_PATH) -> None:
    """Write ``templates`` as JSON (one template per line, so diffs stay readable)."""
    data = templates.to_json()
    rows = data.pop("templates")
    body = json.dumps(data)[:-1]
    lines = ",\n".join(json.dumps(r) for r in rows)
    path.write_text(f'{body}, "templates": [\n{lines}\n]}}\n')


@lru_cache(maxsize=2)
def load_templates(path: Path = TEMPLATES_PATH) -> SoundTemplates:
    """The templates in ``path`` (the shipped ones by default), read once per process."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(
            f"cannot read viseme templates {path} ({e}); re-learn them with "
            "'python bench/vowels.py learn'"
        ) from e
    return SoundTemplates.from_json(data)


_LEVEL_KEY = "viseme.sound_level"


def running_level(state: dict[str, object] | None, mel: np.ndarray, prior: float) -> float:
    """The stream's speech level after this (non-silent) window, kept in ``state``.

    A mean over the stream's last LEVEL_MEMORY_FRAMES frames that starts from the learned
    level ``prior`` as LEVEL_PRIOR_FRAMES frames of evidence. Without state (a lone request)
    the learned level is used as it is.
    """
    if state is None:
        return prior
    kept = state.get(_LEVEL_KEY)
    level, count = kept if isinstance(kept, tuple) else (prior, LEVEL_PRIOR_FRAMES)
    count = min(count + 1, LEVEL_MEMORY_FRAMES)
    now = float(mel[:, :LEVEL_FRAMES].sum()) / (mel.shape[0] * LEVEL_FRAMES)
    level += (now - level) / count
    state[_LEVEL_KEY] = (level, count)
    return level


def level_shift(state: dict[str, object] | None, mel: np.ndarray, spec: FeatureSpec) -> float:
    """How far to raise a stream's non-silent window so its speech sits at the learned level
    (advancing the running level in ``state``), within +-MAX_LEVEL_SHIFT."""
    level = running_level(state, mel, spec.level)
    return float(np.clip(spec.level - level, -MAX_LEVEL_SHIFT, MAX_LEVEL_SHIFT))


def sound_features(
    mel: np.ndarray, state: dict[str, object] | None, spec: FeatureSpec
) -> np.ndarray:
    """Features of a non-silent window of a stream, advancing its running level in ``state``."""
    return spec.features(mel, level_shift(state, mel, spec))


def sound_guess(
    mel: np.ndarray, state: dict[str, object] | None, templates: SoundTemplates | None = None
) -> SoundGuess:
    """Classify a non-silent window of a stream (the shipped templates by default)."""
    templates = templates or load_templates()
    return templates.classify(sound_features(mel, state, templates.spec))


def sound_shape(guess: SoundGuess) -> tuple[str, MouthShape]:
    """The viseme to show (the likeliest of the winning class, for drawn characters) and
    the mouth shape: every viseme's shape weighted by its posterior, so an unsure frame sits
    between shapes instead of flipping. The opening is the shape's, before loudness."""
    in_class = {v: p for v, p in guess.visemes.items() if CLASS_OF_VISEME[v] == guess.sound_class}
    viseme = max(in_class, key=lambda v: in_class[v])
    parts = [(VISEMES[v], p) for v, p in guess.visemes.items()]
    return viseme, MouthShape(
        open=sum(s.open * p for s, p in parts),
        wide=sum(s.wide * p for s, p in parts),
        round=sum(s.round * p for s, p in parts),
        press=sum(s.press * p for s, p in parts),
    )
