"""Where a still photo's head sway is applied: the live pipeline's idle and speech frames
alike (per session, deterministic), never video loops or drawn characters, off with the
server's switch; the offline render, like a live session of its seed. The motion itself:
tests/test_head_motion.py."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from functools import partial
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from config import AppConfig
from inference.avatar.store import Avatar, AvatarStore
from inference.engines.base import LipSyncEngine
from inference.mp4 import bgr_to_video_frame, video_frame_planes
from inference.render import RenderSettings, render_to_mp4
from inference.tts import TextToSpeech
from rtc.live.idle import IdleSource
from rtc.live.motion import FrameMotion, session_seed
from rtc.live.options import PipelineOptions
from rtc.webrtc.signalling import Realtime
from server import build_config, build_parser
from tests.media import decode_mp4
from tests.realtime_peer import realtime_services
from tests.test_realtime_pipeline import RecordingTTS, Rig, until


def video_loop(photo: Avatar) -> Avatar:
    """A two-frame loop made from the photo: an avatar with its own motion."""
    first = photo.frames[0]
    second = dataclasses.replace(first, image=np.ascontiguousarray(first.image[:, ::-1]))
    return dataclasses.replace(photo, name="loop", frames=(first, second))


def test_frame_motion_moves_still_photos_only(avatar_store: AvatarStore) -> None:
    photo, cartoon = avatar_store.get("astronaut"), avatar_store.get("cartoon")
    loop = video_loop(photo)
    motion = FrameMotion(seed=1)
    assert motion.moving(photo) is not None
    assert motion.moving(cartoon) is None and motion.moving(loop) is None
    assert FrameMotion(seed=1, enabled=False).moving(photo) is None
    frame = IdleSource(cartoon).frame(10)
    assert motion.apply(cartoon, 10, frame) is frame


# --- the pipeline -----------------------------------------------------------------------


async def released(rig: Rig, slots: int) -> dict[int, av.VideoFrame]:
    """The frames of the next ``slots`` slots, taken as the track would (clock moved by hand)."""
    out = {}
    for _ in range(slots):
        await rig.step()
        await until(partial(rig.pipeline.video_queue.__contains__, rig.slot))
        frame = rig.pipeline.video_queue.take(rig.slot)
        assert frame is not None
        out[rig.slot] = frame
    return out


def as_array(frame: av.VideoFrame) -> np.ndarray:
    return np.concatenate([p.reshape(-1) for p in video_frame_planes(frame)])


async def start(rig: Rig) -> None:
    """Start the producer and let it fill the first slot before the clock moves."""
    rig.pipeline.start()
    await asyncio.sleep(0)


def photo_rig(avatar_store: AvatarStore, tts: TextToSpeech, **options: Any) -> Rig:
    return Rig(avatar_store, RecordingTTS(tts), PipelineOptions(**options), avatar="astronaut")


async def test_pipeline_idle_frames_sway_per_session(
    avatar_store: AvatarStore, espeak_tts: TextToSpeech
) -> None:
    """Idle frames are the moved idle pictures: the same for the same seed, other for another,
    the unmoved pictures when the motion is off (and the engine is never called)."""
    cases: dict[str, dict[str, Any]] = {
        "a": {"motion_seed": 3},
        "again": {"motion_seed": 3},
        "other": {"motion_seed": 4},
        "off": {"idle_motion": False},
    }
    runs = {}
    for name, options in cases.items():
        rig = photo_rig(avatar_store, espeak_tts, **options)
        await start(rig)
        try:
            runs[name] = await released(rig, 30)
            assert rig.engine.frames == 0
        finally:
            await rig.close()
    idle = IdleSource(avatar_store.get("astronaut"))
    motion = FrameMotion(seed=3)
    photo = avatar_store.get("astronaut")
    for index, frame in runs["a"].items():
        np.testing.assert_array_equal(as_array(frame), as_array(runs["again"][index]))
        moved = motion.apply(photo, index, idle.frame(index))
        np.testing.assert_array_equal(as_array(frame), as_array(moved))
        np.testing.assert_array_equal(as_array(runs["off"][index]), as_array(idle.frame(index)))
    assert any(
        not np.array_equal(as_array(f), as_array(runs["other"][i])) for i, f in runs["a"].items()
    )
    pictures = [as_array(f) for f in runs["a"].values()]
    assert sum(not np.array_equal(p, q) for p, q in itertools.pairwise(pictures)) >= 8


async def test_pipeline_speech_frames_sway_like_idle_ones(
    avatar_store: AvatarStore, espeak_tts: TextToSpeech
) -> None:
    """Outside the mouth a speech frame is the moved photo of its slot, pixel for pixel: the
    head does not jump when speech starts or ends. The first frame is moved too."""
    photo = avatar_store.get("astronaut")
    rig = photo_rig(avatar_store, espeak_tts, motion_seed=11)
    motion = FrameMotion(seed=11)
    box = photo.frames[0].box
    outside = np.ones(photo.frames[0].image.shape[:2], bool)
    # Where the engine draws (the mouth, the jaw down to the neck) and a margin for the warp.
    outside[box.y1 - 16 : box.y2 + 100, box.x1 - 24 : box.x2 + 24] = False
    first = rig.pipeline._next - 1
    np.testing.assert_array_equal(
        as_array(rig.pipeline.first_frame),
        as_array(motion.apply(photo, first, IdleSource(photo).frame(first))),
    )
    await start(rig)
    try:
        rig.pipeline.say("Раз, два, три, четыре, пять.", "ru")
        await until(lambda: rig.pipeline.stats.speech_frames > 0)
        frames = await released(rig, 40)
    finally:
        await rig.close()
    speech = [i for i in frames if i in rig.submitted]
    assert len(speech) >= 10
    unmoved = bgr_to_video_frame(photo.frames[0].image)
    still_y = video_frame_planes(unmoved)[0]
    for index in speech:
        y = video_frame_planes(frames[index])[0]
        moved_y = video_frame_planes(motion.apply(photo, index, unmoved))[0]
        np.testing.assert_array_equal(y[outside], moved_y[outside])
        assert not np.array_equal(y[outside], still_y[outside])


async def test_pipeline_leaves_loops_and_drawn_characters_alone(
    avatar_store: AvatarStore, espeak_tts: TextToSpeech
) -> None:
    loop = video_loop(avatar_store.get("astronaut"))
    for avatar in (avatar_store.get("cartoon"), loop):
        rig = Rig(avatar_store, RecordingTTS(espeak_tts), PipelineOptions(motion_seed=2))
        rig.pipeline.switch_avatar(avatar)
        await start(rig)
        try:
            frames = await released(rig, 12)
        finally:
            await rig.close()
        idle = IdleSource(avatar)
        for index, frame in frames.items():
            np.testing.assert_array_equal(as_array(frame), as_array(idle.frame(index)))


# --- the switches ----------------------------------------------------------------------


def test_the_flags_reach_the_config() -> None:
    parser = build_parser()
    assert build_config(parser.parse_args(["serve"])).avatars.idle_motion is True
    assert (
        build_config(parser.parse_args(["serve", "--no-idle-motion"])).avatars.idle_motion is False
    )
    render = parser.parse_args(["render", "--text", "a", "--out", "a.mp4", "--motion-seed", "5"])
    assert render.motion_seed == 5 and build_config(render).avatars.idle_motion is True


@pytest.mark.usefixtures("loopback_ice")
async def test_the_server_switch_reaches_every_session(
    app_config: AppConfig, avatar_store: AvatarStore, espeak_tts: TextToSpeech
) -> None:
    """A session of a server started with --no-idle-motion shows the unmoved photo; by
    default its photo moves, with a motion of its own id."""
    photo = avatar_store.get("astronaut")
    for motion in (True, False):
        services = realtime_services(app_config, avatar_store, espeak_tts, idle_motion=motion)
        realtime = Realtime(services)
        session = realtime._new_session("viseme", photo, "ru", echo=False)
        try:
            pipeline = session.pipeline
            assert pipeline.options.idle_motion is motion
            assert pipeline.motion.seed == session_seed(session.id, pipeline.options)
            first = pipeline._next - 1
            unmoved = as_array(IdleSource(photo).frame(first))
            assert np.array_equal(as_array(pipeline.first_frame), unmoved) is not motion
        finally:
            await session.close("test over")
            realtime.batchers.close()


# --- the render -------------------------------------------------------------------------


def test_render_sways_like_the_live_session(
    tmp_path: Path, avatar_store: AvatarStore, viseme_engine: LipSyncEngine
) -> None:
    """A render's frames are the photo as a live session of its seed moves it (up to the
    codec's error); without a seed they are the photo."""
    photo = avatar_store.get("astronaut")
    image = photo.frames[0].image
    silence = np.zeros(16000 * 2, np.float32)
    decoded = {}
    for seed in (0, None):
        path = tmp_path / f"{seed}.mp4"
        render_to_mp4(
            silence, photo, viseme_engine, path, settings=RenderSettings(motion_seed=seed)
        )
        decoded[seed] = decode_mp4(path).frames
    live = FrameMotion(seed=0)
    for index in (0, 20, 49):
        got = decoded[0][index].astype(np.int16)
        want = live.apply(photo, index, bgr_to_video_frame(image)).to_ndarray(format="bgr24")
        error = np.abs(got - want).mean()
        assert error < 2.5  # the codec's own error
        assert np.abs(got - image).mean() > 2 * error  # moved: not the photo
        assert np.abs(decoded[None][index].astype(np.int16) - image).mean() < 2.5
