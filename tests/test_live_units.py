"""The live pipeline's own small units: microphone scheduling (rtc/live/mic.py) and the
idle-frame source (rtc/live/idle.py), without a pipeline around them."""

from __future__ import annotations

import numpy as np
import pytest

from inference.avatar.store import AvatarStore
from inference.frames import SAMPLES_PER_FRAME
from rtc.live.idle import IdleSource
from rtc.live.mic import CALM_FRAMES, CATCH_UP_SLACK, MAX_CATCH_UP_SLACK, MicScheduler
from tests.media import tone


def voice(frames: int) -> np.ndarray:
    return tone(220.0, frames * SAMPLES_PER_FRAME / 16_000, amplitude=0.3)


def test_mic_frames_take_consecutive_slots_from_the_earliest_one() -> None:
    mic = MicScheduler(backlog=64, silence_rms=0.01)
    assert mic.push(voice(20), now=1.0) > 0
    queued = len(mic)
    slots = [item.slot for item in mic.take(next_slot=5, earliest=12, horizon=1000)]
    assert slots == list(range(12, 12 + queued))  # anchored at the earliest allowed slot
    assert len(mic) == 0 and mic.dropped == 0
    # The offset holds: the next frames follow on, whatever "earliest" says now.
    mic.push(voice(4), now=1.2)
    more = [item.slot for item in mic.take(next_slot=slots[-1] + 1, earliest=0, horizon=1000)]
    assert more and more[0] == slots[-1] + 1


def test_mic_horizon_keeps_frames_for_later() -> None:
    mic = MicScheduler(backlog=64, silence_rms=0.01)
    mic.push(voice(20), now=0.0)
    first = list(mic.take(next_slot=0, earliest=0, horizon=3))
    assert [item.slot for item in first] == [0, 1, 2, 3]
    assert len(mic) > 0  # the rest waits for a later horizon


def test_mic_late_frames_are_dropped_then_the_offset_reanchors() -> None:
    mic = MicScheduler(backlog=64, silence_rms=0.01)
    mic.push(voice(10), now=0.0)
    (first,) = list(mic.take(next_slot=0, earliest=0, horizon=0))
    assert first.slot == 0
    # The pipeline moved on meanwhile (slots up to 50 are taken): three late frames are
    # dropped, then the next one is re-anchored at the first free slot.
    later = list(mic.take(next_slot=50, earliest=50, horizon=1000))
    assert mic.dropped == 3
    assert later and later[0].slot == 50


def test_mic_backlog_is_bounded_and_silence_closes_the_mouth() -> None:
    mic = MicScheduler(backlog=4, silence_rms=0.01)
    mic.push(np.zeros(40 * SAMPLES_PER_FRAME, np.float32), now=0.0)
    assert len(mic) == 4 and mic.dropped > 0
    closed = [item.closed for item in mic.take(next_slot=0, earliest=0, horizon=1000)]
    assert closed == [False, False, True, True]  # the first two silent frames still infer
    mic.push(voice(6), now=1.0)
    assert not any(item.closed for item in mic.take(0, 0, 1000))
    mic.clear()
    assert len(mic) == 0


def test_mic_frames_are_ready_after_the_engines_look_ahead() -> None:
    """The same audio completes more frames for an engine that reads less of each window:
    frame i needs mel frame mel_start(i) + lookahead - 1, i.e. the look-ahead's audio."""
    pcm = voice(20)  # 12800 samples: mel frames 0..62 exist
    whole = MicScheduler(backlog=64, silence_rms=0.01)
    short = MicScheduler(backlog=64, silence_rms=0.01, lookahead_frames=6)
    assert whole.push(pcm, now=1.0) == 15  # mel_start(14) + 16 = 60 <= 63 < 48 + 16
    assert short.push(pcm, now=1.0) == 19  # mel_start(18) + 6 = 63 <= 63 < 60 + 6
    # Each frame's latency starts when its own audio had arrived, whichever engine.
    (last,) = [item for item in short.take(0, 0, 1000)][-1:]
    assert last.arrived == pytest.approx(1.0 - (12800 - 19 * SAMPLES_PER_FRAME) / 16_000)


def test_a_closed_mouth_catches_a_late_offset_up_with_the_audio() -> None:
    """An offset chosen too far ahead (a stall when the call began) costs nothing for good:
    silent frames, which show the idle picture anyway, are skipped until the frames are
    at most CATCH_UP_SLACK slots later than needed; speech is never skipped."""
    mic = MicScheduler(backlog=64, silence_rms=0.01)
    mic.push(voice(10), now=0.0)
    loud = list(mic.take(next_slot=0, earliest=20, horizon=1000))  # anchored at slot 20
    assert [item.slot for item in loud] == list(range(20, 20 + len(loud)))
    # Later the same frames could go out at slot 12 (the stall is over): speech keeps its
    # slots, silence closes the mouth and catches up.
    mic.push(voice(10), now=0.4)
    nxt = loud[-1].slot + 1
    speech = list(mic.take(next_slot=nxt, earliest=12, horizon=1000))
    assert [item.slot for item in speech] == list(range(nxt, nxt + len(speech)))
    assert mic.skipped == 0
    mic.push(np.zeros(30 * SAMPLES_PER_FRAME, np.float32), now=1.6)
    nxt = speech[-1].slot + 1
    quiet = list(mic.take(next_slot=nxt, earliest=nxt - 14, horizon=1000))
    assert [item.slot for item in quiet] == list(range(nxt, nxt + len(quiet)))  # no gaps
    assert mic.skipped > 0 and mic.dropped == 0
    assert all(item.closed for item in quiet[-5:])
    # Caught up: the last frame sits CATCH_UP_SLACK slots after the earliest it could take
    # (the k-th frame of one take at earliest + k), and the offset moved by what was skipped.
    handled = len(quiet) + mic.skipped
    assert quiet[-1].slot - (nxt - 14 + handled - 1) == CATCH_UP_SLACK
    offsets = [item.slot - item.audio.index for item in quiet]
    assert offsets[0] - offsets[-1] == mic.skipped
    mic.push(voice(4), now=2.8)
    again = list(mic.take(next_slot=quiet[-1].slot + 1, earliest=0, horizon=1000))
    assert again[0].slot == quiet[-1].slot + 1 and not again[0].closed


def test_late_frames_make_catching_up_keep_more_cushion() -> None:
    """A frame that came after its slot shows the server or the network stalls: catching up
    then leaves one more slot of cushion (up to MAX_CATCH_UP_SLACK), and gives it back
    after CALM_FRAMES frames without a late one."""
    mic = MicScheduler(backlog=CALM_FRAMES + 50, silence_rms=0.01)
    mic.push(voice(10), now=0.0)  # frames 0..4
    assert [item.slot for item in mic.take(next_slot=0, earliest=0, horizon=0)] == [0]
    # A stall: by the time frame 1 is taken its slot is gone; frame 2 still makes it.
    assert [item.slot for item in mic.take(next_slot=2, earliest=2, horizon=2)] == [2]
    assert mic.dropped == 1 and mic.slack == CATCH_UP_SLACK + 1
    for _ in range(10):  # more stalls: the cushion grows, but not without bound
        mic._dropped_late()
    assert mic.slack == MAX_CATCH_UP_SLACK
    # A long silence catches up to the larger cushion only.
    mic.push(np.zeros(40 * SAMPLES_PER_FRAME, np.float32), now=2.0)
    quiet = list(mic.take(next_slot=40, earliest=10, horizon=1000))
    handled = len(quiet) + mic.skipped
    assert mic.skipped > 0
    assert quiet[-1].slot - (10 + handled - 1) == MAX_CATCH_UP_SLACK
    # Calm again: the cushion shrinks a slot per CALM_FRAMES frames, down to the first one.
    for k in range(4):
        mic.push(voice(CALM_FRAMES), now=3.0 + 10 * k)
        list(mic.take(next_slot=0, earliest=0, horizon=10**6))
    assert mic.slack == CATCH_UP_SLACK


def test_idle_source_converts_each_picture_once(avatar_store: AvatarStore) -> None:
    photo = IdleSource(avatar_store.get("astronaut"))
    frames = [photo.frame(i) for i in range(50)]
    assert len(photo) == 3  # the still and its two blink pictures (half and fully shut)
    assert all(f.format.name == "yuv420p" for f in frames)
    assert frames[0] is not frames[1]  # each slot gets its own frame object to stamp
    cartoon = IdleSource(avatar_store.get("cartoon"))
    for index in range(300):
        cartoon.frame(index)
    assert len(cartoon) <= 3
