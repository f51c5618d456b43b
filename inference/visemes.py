"""The viseme vocabulary shared by the viseme engine, TTS phoneme mapping and drawn avatars.

A viseme is a mouth shape; several phonemes share one. Each viseme has target mouth
parameters used to warp a photo, and a drawn character ships one mouth image per viseme.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MouthShape:
    """Target mouth parameters, each in [0, 1] except where noted."""

    open: float
    """Jaw/lip opening: 0 closed, 1 as wide open as the avatar allows."""
    wide: float
    """Lip spread (e, i): corners pulled outwards."""
    round: float
    """Lip rounding (o, u): corners pulled inwards, lips pushed forward."""
    press: float = 0.0
    """Lips pressed together (m, b, p): thinner lips, fully closed."""


VISEMES: dict[str, MouthShape] = {
    "rest": MouthShape(open=0.0, wide=0.0, round=0.0),
    "MBP": MouthShape(open=0.0, wide=0.05, round=0.0, press=1.0),
    "AA": MouthShape(open=1.0, wide=0.25, round=0.0),
    "EE": MouthShape(open=0.45, wide=1.0, round=0.0),
    "OO": MouthShape(open=0.7, wide=0.0, round=0.8),
    "UU": MouthShape(open=0.3, wide=0.0, round=1.0),
    "FV": MouthShape(open=0.15, wide=0.3, round=0.0, press=0.4),
    "CONS": MouthShape(open=0.3, wide=0.35, round=0.0),
}
"""Every viseme name with its shape; ``rest`` is the closed, relaxed mouth."""

VISEME_NAMES: tuple[str, ...] = tuple(VISEMES)
