"""The weight-free viseme engine: the engine contract, mouth shapes from phonemes and from sound,
temporal smoothing, batching, the drawn character's cross-fades, and the teeth switch."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pytest

from inference.avatar.store import AvatarStore
from inference.engines.base import LipSyncEngine, available_engines, create_engine
from inference.engines.serial import SerialEngine
from inference.engines.viseme_analysis import (
    ATTACK,
    RELEASE,
    audio_shape,
    hold_viseme,
    phoneme_viseme,
    smooth_shape,
)
from inference.frames import AvatarFrame, Box, FacePatch, LipSyncRequest, MouthGeometry, StreamState
from inference.mel import MIN_VALUE, frame_count, melspectrogram, window_for_frame
from inference.tts import TextToSpeech
from inference.visemes import VISEME_NAMES, VISEMES, MouthShape

SILENT_MEL = np.full((80, 16), MIN_VALUE, np.float32)


@pytest.fixture(scope="module")
def vowel_windows(espeak_tts: TextToSpeech) -> list[np.ndarray]:
    """Mel windows of a long, loud, steady Russian 'а' (espeak holds it for ~0.4 s)."""
    speech = espeak_tts.synthesize("Аааааааааа", "ru")
    mel = melspectrogram(speech.pcm)
    windows = [window_for_frame(mel, i) for i in range(frame_count(speech.pcm.size))]
    # Skip the onset; keep frames whose whole window is inside the vowel.
    steady = windows[1:-4]
    assert len(steady) >= 5
    return steady


@pytest.fixture(scope="module")
def photo(avatar_store: AvatarStore) -> AvatarFrame:
    return avatar_store.get("astronaut").frames[0]


@pytest.fixture(scope="module")
def drawn(avatar_store: AvatarStore) -> AvatarFrame:
    return avatar_store.get("cartoon").frames[0]


def request(
    frame: AvatarFrame,
    mel: np.ndarray = SILENT_MEL,
    silent: bool = False,
    phoneme: str | None = None,
    stream: StreamState | None = None,
) -> LipSyncRequest:
    return LipSyncRequest(mel=mel, frame=frame, silent=silent, phoneme=phoneme, stream=stream)


def region(frame: AvatarFrame, box: Box) -> np.ndarray:
    return frame.image[box.y1 : box.y2, box.x1 : box.x2]


def change(frame: AvatarFrame, patch: FacePatch) -> float:
    """How far the patch departs from the untouched picture (mean abs, 0..255)."""
    return float(np.abs(patch.image.astype(np.float32) - region(frame, patch.box)).mean())


def _is_cavity(image: np.ndarray) -> np.ndarray:
    b, g, r = (image[..., i].astype(np.int32) for i in range(3))
    return (r < 100) & (g < 50) & (b < 60) & (r > g)


def cavity(frame: AvatarFrame, patch: FacePatch) -> np.ndarray:
    """Mask of new dark mouth-interior pixels in a window around a photo's mouth."""
    m, box = frame.mouth, patch.box
    x1, x2 = int(m.center_x - 1.3 * m.half_width), int(m.center_x + 1.3 * m.half_width)
    y1, y2 = int(m.center_y - 1.5 * m.lip_height), int(m.center_y + 1.5 * m.lip_height)
    window = (slice(y1 - box.y1, y2 - box.y1), slice(x1 - box.x1, x2 - box.x1))
    return _is_cavity(patch.image[window]) & ~_is_cavity(region(frame, box)[window])


def one(engine: LipSyncEngine, req: LipSyncRequest) -> FacePatch:
    (patch,) = engine.infer([req])
    return patch


# --- contract -----------------------------------------------------------------------------


def check_contract(
    engine: LipSyncEngine, frames: Sequence[AvatarFrame], windows: Sequence[np.ndarray]
) -> None:
    """What every engine must do, whatever it is."""
    assert engine.infer([]) == []
    requests = [
        request(
            frames[i % len(frames)],
            windows[i % len(windows)],
            silent=i % 3 == 0,
            stream=StreamState(),
        )
        for i in range(7)
    ]
    patches = engine.infer(requests)
    assert len(patches) == len(requests)
    for req, patch in zip(requests, patches, strict=True):
        h, w = req.frame.image.shape[:2]
        box = patch.box
        assert 0 <= box.x1 < box.x2 <= w and 0 <= box.y1 < box.y2 <= h
        assert patch.image.dtype == np.uint8
        assert patch.image.shape == (box.height, box.width, 3)
        if patch.alpha is not None:
            assert patch.alpha.dtype == np.float32 and patch.alpha.shape == (box.height, box.width)
            assert patch.alpha.min() >= 0.0 and patch.alpha.max() <= 1.0
    # In order: each answer is the one the request would get alone.
    for req, patch in zip(requests, patches, strict=True):
        alone = one(engine, request(req.frame, req.mel, req.silent, stream=StreamState()))
        assert alone.box == patch.box and np.array_equal(alone.image, patch.image)
    # A live stream hands the engine a frame once its lookahead_frames exist, the rest of the
    # window silence (inference/live.py): what is there must not change the answer.
    n = engine.lookahead_frames
    assert 1 <= n <= 16 and engine.lookahead_ms == n * 12.5
    for req, patch in zip(requests, patches, strict=True):
        early = req.mel.copy()
        early[:, n:] = MIN_VALUE
        alone = one(engine, request(req.frame, early, req.silent, stream=StreamState()))
        assert alone.box == patch.box and np.array_equal(alone.image, patch.image)


def test_engine_contract(
    viseme_engine: LipSyncEngine,
    photo: AvatarFrame,
    drawn: AvatarFrame,
    vowel_windows: list[np.ndarray],
) -> None:
    # Windows that change along their length: the vowel's, then its onset into silence.
    onsets = [np.concatenate((w[:, :8], SILENT_MEL[:, :8]), axis=1) for w in vowel_windows]
    check_contract(viseme_engine, [photo, drawn], [*vowel_windows, *onsets])
    assert viseme_engine.name == "viseme"
    assert viseme_engine.lookahead_frames == 6  # 75 ms: what its sound analysis reads
    # The server shares engines behind SerialEngine: the look-ahead must come through it.
    assert SerialEngine(viseme_engine).lookahead_frames == 6
    assert viseme_engine.describe() == {"name": "viseme", "device": "cpu", "backend": "numpy"}


def test_registry_knows_the_engine() -> None:
    assert "viseme" in available_engines()
    assert create_engine("viseme").name == "viseme"
    with pytest.raises(ValueError, match=r"known engines: .*viseme"):
        create_engine("telepathy")


def test_silence_keeps_the_photo_untouched(
    viseme_engine: LipSyncEngine, photo: AvatarFrame
) -> None:
    stream = StreamState()
    for silent in (True, False):  # the flag, or a window that is silent by its sound
        patch = one(viseme_engine, request(photo, SILENT_MEL, silent=silent, stream=stream))
        assert np.abs(patch.image.astype(int) - region(photo, patch.box)).max() <= 1
    # Also after speech, once the mouth has had time to close.
    loud = np.full((80, 16), 2.0, np.float32)
    opened = one(viseme_engine, request(photo, loud, phoneme="'A", stream=stream))
    for _ in range(10):
        patch = one(viseme_engine, request(photo, SILENT_MEL, silent=True, stream=stream))
    # Closed: no opening, and at most the sub-pixel remainder the smoothing's dead band
    # leaves (it stops within 0.02 of the target).
    assert cavity(photo, patch).sum() < 0.02 * cavity(photo, opened).sum()
    assert change(photo, patch) < 0.5


def test_silence_shows_the_drawn_rest_mouth(
    viseme_engine: LipSyncEngine, drawn: AvatarFrame
) -> None:
    patch = one(viseme_engine, request(drawn, SILENT_MEL, silent=True))
    assert drawn.character is not None
    rest, _ = drawn.character.render_mouth({"rest": 1.0})
    assert np.array_equal(patch.image, rest)
    assert np.abs(patch.image.astype(int) - region(drawn, patch.box)).max() <= 1


# --- what shape ---------------------------------------------------------------------------


@pytest.mark.parametrize(("phoneme", "viseme"), [
    ("'e", "EE"), ("e", "EE"), ("i", "EE"), ("'i:", "EE"),
    ("m;", "MBP"), ("m", "MBP"), ("b", "MBP"), ("p", "MBP"),
    ("'A", "AA"), ("a", "AA"), ("a#", "AA"), ("V", "AA"), ("'A@", "AA"), ("'aI@", "AA"),
    ("u", "UU"), ("'u", "UU"), ("u:", "UU"),
    ("o", "OO"), ("'o", "OO"), ("O:", "OO"),
    ("f", "FV"), ("v", "FV"), ("v;", "FV"),
    ("t", "CONS"), ("s", "CONS"), ("k", "CONS"), ("d;", "CONS"), ("tS;", "CONS"),
    ("_", "rest"), ("_:", "rest"), ("_!", "rest"), ("", "rest"),
])  # fmt: skip
def test_espeak_mnemonics_map_to_visemes(phoneme: str, viseme: str) -> None:
    assert phoneme_viseme(phoneme) == viseme


def test_lone_palatalisation_mark_is_speech_not_a_pause() -> None:
    # espeak reports the softening of a Russian consonant as its own ';' event ("Привет":
    # p @- r ; i v ; 'e t). It is spoken: the mouth must not snap shut for it.
    assert phoneme_viseme(";") != "rest"


def test_every_mapped_viseme_exists() -> None:
    for phoneme in ("'e", "m;", "'A", "u", "o", "f", "t", "_", "zz-unknown"):
        assert phoneme_viseme(phoneme) in VISEME_NAMES


def test_vowels_open_more_than_closed_lips(
    viseme_engine: LipSyncEngine, photo: AvatarFrame, vowel_windows: list[np.ndarray]
) -> None:
    loud = vowel_windows[2]
    area = {}
    for phoneme in ("'A", "'e", "'o", "u", "m", "b", "p"):
        patch = one(viseme_engine, request(photo, loud, phoneme=phoneme))
        area[phoneme] = int(cavity(photo, patch).sum())
    assert area["'A"] > 300
    for vowel in ("'A", "'e", "'o", "u"):
        for closed in ("m", "b", "p"):
            assert area[vowel] > 5 * max(area[closed], 1), (vowel, closed, area)
    assert area["'A"] == max(area.values())


def test_spread_vowels_are_wider_than_rounded_ones(
    viseme_engine: LipSyncEngine, photo: AvatarFrame, vowel_windows: list[np.ndarray]
) -> None:
    def width(phoneme: str) -> int:
        mask = cavity(photo, one(viseme_engine, request(photo, vowel_windows[2], phoneme=phoneme)))
        cols = np.nonzero(mask.any(axis=0))[0]
        return int(cols.max() - cols.min() + 1)

    assert width("'e") > 1.15 * width("'o")
    assert width("'e") > 1.15 * width("'u")


def test_audio_alone_opens_for_a_loud_vowel_and_closes_in_silence(
    viseme_engine: LipSyncEngine, photo: AvatarFrame, vowel_windows: list[np.ndarray]
) -> None:
    for window in vowel_windows:
        heard = audio_shape(window)
        assert heard.loudness > 0.8 and heard.shape.open > 0.6
    quiet = audio_shape(SILENT_MEL)
    assert quiet.loudness == 0.0 and quiet.shape.open == 0.0

    opened = one(viseme_engine, request(photo, vowel_windows[2]))
    closed = one(viseme_engine, request(photo, SILENT_MEL))
    assert cavity(photo, opened).sum() > 300
    assert change(photo, closed) == 0.0


def test_phoneme_gives_the_shape_audio_gives_the_size(
    viseme_engine: LipSyncEngine, photo: AvatarFrame, vowel_windows: list[np.ndarray]
) -> None:
    loud = vowel_windows[2]
    soft = loud - 1.6  # about 20 dB quieter
    assert audio_shape(soft).loudness < audio_shape(loud).loudness
    big = cavity(photo, one(viseme_engine, request(photo, loud, phoneme="'A"))).sum()
    small = cavity(photo, one(viseme_engine, request(photo, soft, phoneme="'A"))).sum()
    assert big > small
    # A phoneme over a silent window does not open the mouth (its shape may still show:
    # lips pressed during the silent closure of a 'p' are right).
    for phoneme in ("'A", "'e", "'o"):
        muted = one(viseme_engine, request(photo, SILENT_MEL, phoneme=phoneme))
        assert cavity(photo, muted).sum() < 0.05 * big  # edge pixels of moved lips at most


# --- over time ----------------------------------------------------------------------------


def test_smoothing_attacks_fast_and_releases_slower() -> None:
    rest, open_ = VISEMES["rest"], VISEMES["AA"]
    shape = smooth_shape(None, rest)
    rising = []
    for _ in range(6):
        shape = smooth_shape(shape, open_)
        rising.append(shape.open)
    falling = []
    for _ in range(8):
        shape = smooth_shape(shape, rest)
        falling.append(shape.open)
    assert rising[0] == pytest.approx(ATTACK)
    assert all(b >= a for a, b in itertools.pairwise(rising))
    assert rising[2] > 0.95
    assert falling[0] == pytest.approx(1.0 - RELEASE * rising[-1], abs=0.02)
    assert all(b <= a for a, b in itertools.pairwise(falling))
    assert falling[-1] < 0.05
    frames_to_open = next(i for i, v in enumerate(rising) if v > 0.9)
    frames_to_close = next(i for i, v in enumerate(falling) if v < 0.1)
    assert frames_to_close > frames_to_open


def test_engine_opening_follows_attack_and_release(
    viseme_engine: LipSyncEngine, photo: AvatarFrame, vowel_windows: list[np.ndarray]
) -> None:
    stream = StreamState()
    plan = [None] * 3 + vowel_windows[:6] + [None] * 8
    sizes = []
    for window in plan:
        req = (
            request(photo, SILENT_MEL, silent=True, stream=stream)
            if window is None
            else request(photo, window, stream=stream)
        )
        sizes.append(change(photo, one(viseme_engine, req)))
    before, during, after = sizes[:3], sizes[3:9], sizes[9:]
    assert before == [0.0, 0.0, 0.0]
    assert during[0] > 0.5 * max(during)  # opens within a frame (lips lead the sound)
    assert after[0] > 0.2 * max(during)  # ... but does not snap shut
    assert all(b <= a + 1e-6 for a, b in itertools.pairwise(after))
    assert after[-1] < 0.05 * max(during)


def test_steady_vowel_gives_a_steady_mouth(
    viseme_engine: LipSyncEngine,
    photo: AvatarFrame,
    drawn: AvatarFrame,
    vowel_windows: list[np.ndarray],
) -> None:
    # Held for 1 s (the steady windows cycled): after settling, no shimmer.
    windows = [vowel_windows[i % len(vowel_windows)] for i in range(25)]
    for frame in (photo, drawn):
        for phoneme in (None, "'A"):
            stream = StreamState()
            patches = [
                one(viseme_engine, request(frame, w, phoneme=phoneme, stream=stream))
                for w in windows
            ]
            settled = [change(frame, p) for p in patches[4:]]
            assert max(settled) > 5.0
            assert max(settled) - min(settled) <= 0.05 * max(settled), (frame.character, phoneme)


def test_batched_equals_unbatched(
    viseme_engine: LipSyncEngine,
    photo: AvatarFrame,
    drawn: AvatarFrame,
    vowel_windows: list[np.ndarray],
) -> None:
    rng = np.random.default_rng(5)
    phonemes = [None, "'A", "m", "'e", "u", "_", "s", None]

    def script(frame: AvatarFrame, stream: StreamState) -> list[LipSyncRequest]:
        out = []
        for i in range(30):
            silent = bool(rng_values[i] < 0.2)
            window = SILENT_MEL if silent else vowel_windows[i % len(vowel_windows)] - rng_levels[i]
            out.append(request(frame, window, silent, phonemes[i % len(phonemes)], stream))
        return out

    rng_values = rng.random(30)
    rng_levels = rng.random(30).astype(np.float32) * 2.0
    for frame in (photo, drawn):
        batched = viseme_engine.infer(script(frame, StreamState()))
        single = [one(viseme_engine, r) for r in script(frame, StreamState())]
        assert all(np.array_equal(a.image, b.image) for a, b in zip(batched, single, strict=True))
    # Two streams interleaved in one batch each get what they would get alone.
    a_reqs, b_reqs = script(photo, StreamState()), script(drawn, StreamState())
    mixed = viseme_engine.infer([r for pair in zip(a_reqs, b_reqs, strict=True) for r in pair])
    alone_a = viseme_engine.infer(script(photo, StreamState()))
    alone_b = viseme_engine.infer(script(drawn, StreamState()))
    for i in range(30):
        assert np.array_equal(mixed[2 * i].image, alone_a[i].image)
        assert np.array_equal(mixed[2 * i + 1].image, alone_b[i].image)


def test_drawn_mouths_switch_whole_never_blended(
    viseme_engine: LipSyncEngine, drawn: AvatarFrame, vowel_windows: list[np.ndarray]
) -> None:
    character = drawn.character
    assert character is not None
    rest, _ = character.render_mouth({"rest": 1.0})
    aa, _ = character.render_mouth({"AA": 1.0})
    stream = StreamState()
    for _ in range(3):
        one(viseme_engine, request(drawn, SILENT_MEL, silent=True, stream=stream))
    steps = [
        one(viseme_engine, request(drawn, vowel_windows[2], phoneme="'A", stream=stream))
        for _ in range(4)
    ]
    # Every frame is one whole picture: no ghosted double outline of two mouths.
    assert all(np.array_equal(s.image, rest) or np.array_equal(s.image, aa) for s in steps)
    assert np.array_equal(steps[0].image, aa)  # rest was up long enough: it switches at once
    assert steps[0].alpha is not None and steps[0].box == character.mouth_box()


def test_a_sprite_stays_up_at_least_its_hold_time() -> None:
    from inference.engines.viseme_analysis import MIN_HOLD_FRAMES

    script = ["rest", "AA", "EE", "OO", "OO", "MBP", "AA", "AA", "AA", "rest", "rest", "rest"]
    shown: list[str] = []
    state = None
    for viseme in script:
        state = hold_viseme(state, viseme)
        shown.append(state.viseme)
    runs = [len(list(group)) for _, group in itertools.groupby(shown)]
    assert all(run >= MIN_HOLD_FRAMES for run in runs[:-1]), shown
    assert shown[-1] == "rest" and "AA" in shown and "OO" in shown  # it still follows
    assert shown[1] == "rest" and shown[2] == "EE"  # AA lasted one frame: held over, skipped


def _plain_face() -> AvatarFrame:
    """A face with no teeth anywhere: skin and a band of lips, so any bright pixel is new."""
    image = np.zeros((320, 320, 3), np.uint8)
    image[...] = (120, 150, 200)
    image[200:224, 115:205] = (90, 90, 170)
    image.setflags(write=False)
    mouth = MouthGeometry(
        center_x=160.0, center_y=212.0, half_width=45.0, lip_height=24.0, chin_y=270.0
    )
    return AvatarFrame(image=image, box=Box(70, 60, 250, 280), mouth=mouth)


@pytest.mark.parametrize("viseme", ["AA", "EE", "OO"])
def test_teeth_switch(viseme: str) -> None:
    from inference.engines.viseme_photo import render_photo_mouth

    frame = _plain_face()
    with_teeth = render_photo_mouth(frame, VISEMES[viseme], teeth=True)
    without = render_photo_mouth(frame, VISEMES[viseme], teeth=False)

    def bright(patch: FacePatch) -> int:
        return int((patch.image.min(axis=2) > 150).sum())

    assert bright(with_teeth) > 20
    assert bright(without) == 0
    assert _is_cavity(without.image).sum() > 100  # the mouth is open all the same


def test_teeth_flag_of_the_avatar_frame_is_obeyed(
    viseme_engine: LipSyncEngine, vowel_windows: list[np.ndarray]
) -> None:
    face = _plain_face()
    toothless = AvatarFrame(image=face.image, box=face.box, mouth=face.mouth, teeth=False)
    for frame, expect_teeth in ((face, True), (toothless, False)):
        patch = one(viseme_engine, request(frame, vowel_windows[2], phoneme="'A"))
        assert (int((patch.image.min(axis=2) > 150).sum()) > 0) == expect_teeth


def test_shapes_are_within_range() -> None:
    for name, shape in VISEMES.items():
        for value in (shape.open, shape.wide, shape.round, shape.press):
            assert 0.0 <= value <= 1.0, name
    assert VISEMES["rest"] == MouthShape(0.0, 0.0, 0.0)
    assert VISEMES["MBP"].open == 0.0 and VISEMES["MBP"].press == 1.0
