"""The acceptance test of offline rendering: in the MP4 a viewer gets, the mouth moves with the
sound and rests in the pauses, sound and picture last equally long, and colours are right."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from config import PROJECT_ROOT
from inference.audio_io import decode_audio, resample
from inference.avatar.store import Avatar, AvatarStore, load_avatar
from inference.compositor import composite, lower_face_mask
from inference.engines.base import LipSyncEngine
from inference.frames import (
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    AvatarFrame,
    Box,
    FacePatch,
    MouthGeometry,
)
from inference.mel import frame_count
from inference.mp4 import clone_video_frame, i420_to_video_frame
from inference.render import RenderSettings, RenderStats, render_to_mp4
from inference.tts import Speech, TextToSpeech
from tests.media import (
    DecodedMp4,
    decode_mp4,
    encode_audio,
    frame_rms,
    mouth_region,
    pearson,
    region_change,
)

# Blank lines make espeak pause for ~0.5 s between the sentences (a '...' does not).
PAUSED_TEXT = "Привет!\n\nКак дела?\n\nМама мыла раму."
SILENCE_RMS = 0.004
"""The renderer's default silence threshold (EngineConfig.silence_rms)."""
MIN_CORRELATION = 0.5
STILL = RenderSettings(silence_rms=SILENCE_RMS, motion_seed=None)
"""The mouth is measured against the photo: the head's sway stays off (it has its own
tests, tests/test_head_motion.py)."""


@dataclass(frozen=True)
class Rendered:
    avatar: Avatar
    speech: Speech
    stats: RenderStats
    mp4: DecodedMp4
    change: np.ndarray
    """Per decoded frame: mean abs difference from the idle picture inside the mouth area."""
    idle_change: float
    """The same measure on a render of pure silence: what the codec alone contributes."""


def measuring_box(avatar: Avatar) -> Box:
    frame = avatar.frames[0]
    if frame.character is not None:
        return frame.box  # a drawn avatar's box is its mouth box
    return mouth_region(frame.mouth, frame.image.shape)


@pytest.fixture(scope="module")
def speech(espeak_tts: TextToSpeech) -> Speech:
    return espeak_tts.synthesize(PAUSED_TEXT, "ru")


@pytest.fixture(scope="module")
def rendered(
    tmp_path_factory: pytest.TempPathFactory,
    avatar_store: AvatarStore,
    viseme_engine: LipSyncEngine,
    speech: Speech,
) -> dict[str, Rendered]:
    folder = tmp_path_factory.mktemp("render")
    out: dict[str, Rendered] = {}
    for name in ("astronaut", "cartoon"):
        avatar = avatar_store.get(name)
        path = folder / f"{name}.mp4"
        stats = render_to_mp4(
            np.asarray(speech.pcm),
            avatar,
            viseme_engine,
            path,
            phonemes=speech.phonemes,
            settings=STILL,
        )
        mp4 = decode_mp4(path)
        idle = avatar.frames[0].image
        box = measuring_box(avatar)
        silent_path = folder / f"{name}-silent.mp4"
        render_to_mp4(
            np.zeros(SAMPLE_RATE // 2, np.float32),
            avatar,
            viseme_engine,
            silent_path,
            settings=STILL,
        )
        idle_change = float(region_change(decode_mp4(silent_path).frames, idle, box).max())
        out[name] = Rendered(
            avatar, speech, stats, mp4, region_change(mp4.frames, idle, box), idle_change
        )
    return out


def silent_runs(pcm: np.ndarray, min_frames: int) -> list[tuple[int, int]]:
    """(first, end) video-frame ranges at least ``min_frames`` long where the audio is silent."""
    quiet = frame_rms(pcm, frame_count(pcm.size)) < SILENCE_RMS
    runs, start = [], None
    for i, q in enumerate([*quiet, False]):
        if q and start is None:
            start = i
        elif not q and start is not None:
            if i - start >= min_frames:
                runs.append((start, i))
            start = None
    return runs


def test_tts_really_pauses_between_sentences(speech: Speech) -> None:
    pcm = np.asarray(speech.pcm)
    runs = silent_runs(pcm, min_frames=10)  # >= 400 ms
    inner = [(a, b) for a, b in runs if a > 0 and b < frame_count(pcm.size)]
    assert len(inner) >= 2, runs
    # ... and the phoneme marks leave the pauses unmarked.
    for a, b in inner:
        t0, t1 = (a + 1) / 25, (b - 1) / 25
        assert not any(m.start < t1 and m.end > t0 for m in speech.phonemes)


@pytest.mark.parametrize("name", ["astronaut", "cartoon"])
def test_mouth_motion_follows_the_audio(rendered: dict[str, Rendered], name: str) -> None:
    r = rendered[name]
    loudness = frame_rms(r.mp4.audio, len(r.mp4.frames))
    correlation = pearson(r.change, loudness)
    print(f"{name}: mouth-region change vs audio RMS, Pearson r = {correlation:.3f}")
    assert correlation >= MIN_CORRELATION
    assert r.change.max() > 10.0  # the mouth visibly moves


@pytest.mark.parametrize("name", ["astronaut", "cartoon"])
def test_mouth_is_closed_in_the_pauses(rendered: dict[str, Rendered], name: str) -> None:
    r = rendered[name]
    pcm = np.asarray(r.speech.pcm)
    # Inside each pause, skip the frames where the mouth may still be closing (release) and
    # those whose 200 ms window already hears the next sentence.
    settle, lookahead = 6, 5
    resting = [
        i for a, b in silent_runs(pcm, 10) if a > 0 for i in range(a + settle, b - lookahead)
    ]
    assert len(resting) >= 6
    speaking = np.percentile(r.change, 90)
    for i in resting:
        assert r.change[i] <= r.idle_change + 1.0, (i, r.change[i], r.idle_change)
        assert r.change[i] <= 0.15 * speaking


@pytest.mark.parametrize("name", ["astronaut", "cartoon"])
def test_mp4_is_h264_aac_25fps_with_equal_durations(
    rendered: dict[str, Rendered], name: str
) -> None:
    r = rendered[name]
    mp4, samples = r.mp4, len(r.speech.pcm)
    assert mp4.video_codec == "h264" and mp4.audio_codec == "aac"
    assert mp4.pix_fmt == "yuv420p"
    assert mp4.fps == 25
    frames = frame_count(samples)
    assert len(mp4.frames) == frames == r.stats.frames
    assert mp4.video_pts == sorted(mp4.video_pts) and len(set(mp4.video_pts)) == frames
    assert r.stats.duration == pytest.approx(frames / 25)
    assert abs(mp4.video_duration - mp4.audio_duration) <= 0.040
    assert abs(mp4.video_duration - samples / SAMPLE_RATE) < 0.040 + 1e-9
    # Decoders that ignore the edit list play at most one AAC frame of padding more.
    assert frames * SAMPLES_PER_FRAME <= mp4.audio.size < frames * SAMPLES_PER_FRAME + 1024
    # The sound is the speech (AAC is lossy: compare envelopes).
    heard = frame_rms(mp4.audio, frames)
    assert pearson(heard, frame_rms(np.asarray(r.speech.pcm), frames)) > 0.95
    assert mp4.frames[0].shape == r.avatar.frames[0].image.shape


def marked_astronaut(folder: Path) -> Path:
    """The astronaut with pure red, green and blue corner patches (BGR order on disk)."""
    image = cv2.imread(str(PROJECT_ROOT / "avatars" / "astronaut.jpg"))
    assert image is not None
    image[8:56, 8:56] = (0, 0, 255)  # red, top left
    image[8:56, -56:-8] = (255, 0, 0)  # blue, top right
    image[-56:-8, 8:56] = (0, 255, 0)  # green, bottom left
    path = folder / "marked.png"
    cv2.imwrite(str(path), image)
    return path


def test_colours_survive_the_round_trip(
    tmp_path: Path, viseme_engine: LipSyncEngine, espeak_tts: TextToSpeech
) -> None:
    avatar = load_avatar(marked_astronaut(tmp_path), tmp_path / "cache")
    speech = espeak_tts.synthesize("Мама", "ru")
    out = tmp_path / "marked.mp4"
    render_to_mp4(
        np.asarray(speech.pcm), avatar, viseme_engine, out, phonemes=speech.phonemes, settings=STILL
    )
    with av.open(str(out)) as container:
        rgb = next(container.decode(video=0)).to_ndarray(format="rgb24")

    def mean(patch: np.ndarray) -> np.ndarray:
        return patch[8:40, 8:40].reshape(-1, 3).mean(axis=0)

    red, blue, green = mean(rgb[8:56, 8:56]), mean(rgb[8:56, -56:-8]), mean(rgb[-56:-8, 8:56])
    assert red[0] > 200 and red[1] < 60 and red[2] < 60, red
    assert blue[2] > 200 and blue[0] < 60 and blue[1] < 60, blue
    assert green[1] > 200 and green[0] < 60 and green[2] < 60, green
    # And the whole picture matches the avatar, not just the patches.
    bgr = rgb[..., ::-1].astype(np.float32)
    assert np.abs(bgr - avatar.frames[0].image).mean() < 4.0


def test_render_from_an_audio_file(
    tmp_path: Path, avatar_store: AvatarStore, viseme_engine: LipSyncEngine, speech: Speech
) -> None:
    # A microphone recording has no phonemes: the engine must work from the sound alone.
    recorded = resample(np.asarray(speech.pcm), SAMPLE_RATE, 44_100)
    upload = encode_audio(tmp_path / "speech.wav", recorded, 44_100, "pcm_s16le", "wav")
    pcm = decode_audio(upload)
    assert abs(pcm.size - len(speech.pcm)) <= 2
    avatar = avatar_store.get("astronaut")
    out = tmp_path / "from-audio.mp4"
    stats = render_to_mp4(pcm, avatar, viseme_engine, out)
    mp4 = decode_mp4(out)
    assert len(mp4.frames) == stats.frames == frame_count(pcm.size)
    assert abs(mp4.video_duration - mp4.audio_duration) <= 0.040
    change = region_change(mp4.frames, avatar.frames[0].image, measuring_box(avatar))
    correlation = pearson(change, frame_rms(mp4.audio, len(mp4.frames)))
    print(f"audio only: mouth-region change vs audio RMS, Pearson r = {correlation:.3f}")
    assert correlation >= MIN_CORRELATION


def test_empty_audio_is_refused(
    tmp_path: Path, avatar_store: AvatarStore, viseme_engine: LipSyncEngine
) -> None:
    out = tmp_path / "empty.mp4"
    with pytest.raises(ValueError, match="no audio"):
        render_to_mp4(np.zeros(0, np.float32), avatar_store.get("astronaut"), viseme_engine, out)
    assert not out.exists()


def test_progress_reaches_the_total(
    tmp_path: Path, avatar_store: AvatarStore, viseme_engine: LipSyncEngine
) -> None:
    calls: list[tuple[int, int]] = []
    pcm = np.zeros(3 * SAMPLE_RATE, np.float32)
    stats = render_to_mp4(
        pcm,
        avatar_store.get("cartoon"),
        viseme_engine,
        tmp_path / "quiet.mp4",
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls and calls[-1] == (stats.frames, stats.frames)
    assert [d for d, _ in calls] == sorted({d for d, _ in calls})


def test_engine_failure_surfaces(tmp_path: Path, avatar_store: AvatarStore) -> None:
    class Broken(LipSyncEngine):
        name = "broken"

        def infer(self, requests: object) -> list[FacePatch]:
            raise RuntimeError("model exploded")

    with pytest.raises(RuntimeError, match="model exploded"):
        render_to_mp4(
            np.full(SAMPLE_RATE, 0.1, np.float32),
            avatar_store.get("astronaut"),
            Broken(),
            tmp_path / "broken.mp4",
        )


# --- compositor ---------------------------------------------------------------------------


def _frame() -> AvatarFrame:
    image = np.zeros((120, 100, 3), np.uint8)
    image[..., 0] = 200  # blue in BGR
    image.setflags(write=False)
    return AvatarFrame(
        image=image, box=Box(20, 10, 80, 110), mouth=MouthGeometry(50.0, 80.0, 15.0, 8.0, 100.0)
    )


def test_plain_paste_replaces_the_box_exactly() -> None:
    frame = _frame()
    patch = FacePatch(image=np.full((100, 60, 3), (0, 0, 255), np.uint8), box=frame.box)
    out = composite(frame, patch, feather=False)
    assert np.array_equal(out[10:110, 20:80], patch.image)
    outside = np.ones(out.shape[:2], bool)
    outside[10:110, 20:80] = False
    assert np.array_equal(out[outside], frame.image[outside])
    assert frame.image[50, 50, 2] == 0  # the avatar's own picture is never modified


def test_feathered_paste_blends_the_lower_face_and_keeps_the_edges() -> None:
    frame = _frame()
    patch = FacePatch(image=np.full((100, 60, 3), (0, 0, 255), np.uint8), box=frame.box)
    out = composite(frame, patch, feather=True)
    mask = lower_face_mask(100, 60)
    assert mask.min() == 0.0 and mask.max() > 0.99
    region = out[10:110, 20:80].astype(np.float32)
    expected = patch.image * mask[..., None] + frame.image[10:110, 20:80] * (1 - mask[..., None])
    assert np.abs(region - expected).max() <= 1.0
    # The box border is untouched, the mouth area replaced, the eyes (top) mostly kept.
    assert np.array_equal(out[10, 20:80], frame.image[10, 20:80])
    assert out[80, 50, 2] > 240
    assert out[25, 50, 2] < 60


def test_patch_alpha_wins_over_the_mask() -> None:
    frame = _frame()
    alpha = np.zeros((100, 60), np.float32)
    alpha[40:60, 20:40] = 1.0
    patch = FacePatch(
        image=np.full((100, 60, 3), (0, 0, 255), np.uint8), box=frame.box, alpha=alpha
    )
    for feather in (True, False):
        out = composite(frame, patch, feather=feather)
        changed = np.any(out != frame.image, axis=2)
        assert changed.sum() == 20 * 20
        assert changed[50:70, 40:60].all()


@pytest.mark.parametrize("width,height", [(512, 512), (100, 62), (34, 18)])
def test_i420_frame_matches_pyav(width: int, height: int) -> None:
    """The plane-by-plane frame builder gives PyAV's own result, padded rows included."""
    rng = np.random.default_rng(width)
    yuv = rng.integers(0, 256, (height * 3 // 2, width), dtype=np.uint8)
    ours = i420_to_video_frame(yuv)
    theirs = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
    assert (ours.width, ours.height, ours.format.name) == (width, height, "yuv420p")
    np.testing.assert_array_equal(ours.to_ndarray(), theirs.to_ndarray())


@pytest.mark.parametrize("shape", [(15, 9), (16, 10), (7, 10)])
def test_i420_frame_rejects_odd_sizes(shape: tuple[int, int]) -> None:
    """Odd widths, odd heights and row counts that are not 3/2 of a height are refused."""
    with pytest.raises(ValueError, match="even-sized"):
        i420_to_video_frame(np.zeros(shape, np.uint8))


def test_clone_video_frame_is_an_independent_copy() -> None:
    rng = np.random.default_rng(7)
    yuv = rng.integers(0, 256, (96 * 3 // 2, 100), dtype=np.uint8)
    frame = i420_to_video_frame(yuv)
    frame.pts, frame.time_base = 3600, Fraction(1, 90_000)
    copy = clone_video_frame(frame)
    assert copy is not frame and (copy.pts, copy.time_base) == (3600, Fraction(1, 90_000))
    np.testing.assert_array_equal(copy.to_ndarray(), frame.to_ndarray())
    copy.pts = 1
    copy.planes[0].update(bytes(copy.planes[0].buffer_size))
    assert frame.pts == 3600
    np.testing.assert_array_equal(frame.to_ndarray(), yuv)
