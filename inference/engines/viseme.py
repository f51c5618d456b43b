"""The weight-free ``viseme`` engine: real lip-sync from phonemes or sound, no model file.

Per frame it decides a mouth shape (the TTS phoneme when known, else the sound's nearest
phoneme templates, viseme_sound.py; the loudness sets the opening), smooths it over time per
stream (fast attack, slower release, a dead band against jitter), and renders it: on a photo
by warping lips and jaw and drawing the opening (teeth optional per avatar); on a drawn
character by switching its viseme mouth pictures whole, each held at least 80 ms.

It reads only the first 75 ms of each window (``lookahead_frames`` 6 of 16), so a live
microphone reaches it 125 ms sooner than it reaches Wav2Lip.
"""

from __future__ import annotations

from collections.abc import Sequence

from inference.engines.base import LipSyncEngine, register_engine
from inference.engines.viseme_analysis import (
    SpriteState,
    hold_viseme,
    smooth_shape,
    target_shape,
)
from inference.engines.viseme_photo import render_photo_mouth
from inference.engines.viseme_sound import LOOKAHEAD_FRAMES
from inference.frames import FacePatch, LipSyncRequest
from inference.visemes import MouthShape

_SHAPE_KEY = "viseme.shape"
_SPRITE_KEY = "viseme.sprite"


class VisemeEngine(LipSyncEngine):
    """Lip-sync by visemes; needs no weights and runs well over real time on one core.

    Which renderer runs is chosen per request by the avatar frame: frames of a drawn avatar
    carry their character, photos do not.
    """

    name = "viseme"
    device = "cpu"
    backend = "numpy"
    max_batch = 64
    lookahead_frames = LOOKAHEAD_FRAMES  # 75 ms: a microphone's frame is ready 47.5 ms after it

    def infer(self, requests: Sequence[LipSyncRequest]) -> list[FacePatch]:
        """Render each request's frame; stream state is advanced in request order."""
        return [self._one(request) for request in requests]

    def _one(self, request: LipSyncRequest) -> FacePatch:
        state = request.stream.values if request.stream is not None else None
        viseme, target = target_shape(request.mel, request.silent, request.phoneme, state)
        character = request.frame.character
        if character is not None:
            previous = state.get(_SPRITE_KEY) if state is not None else None
            sprite = hold_viseme(previous if isinstance(previous, SpriteState) else None, viseme)
            if state is not None:
                state[_SPRITE_KEY] = sprite
            image, alpha = character.render_mouth({sprite.viseme: 1.0})
            return FacePatch(image=image, box=character.mouth_box(), alpha=alpha)
        last = state.get(_SHAPE_KEY) if state is not None else None
        shape = smooth_shape(last if isinstance(last, MouthShape) else None, target)
        if state is not None:
            state[_SHAPE_KEY] = shape
        return render_photo_mouth(request.frame, shape, request.frame.teeth)


def _create(**_: object) -> VisemeEngine:
    return VisemeEngine()


register_engine("viseme", _create)
