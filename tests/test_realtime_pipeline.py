"""The per-session producer on a hand-moved clock: idle, speech pairing, interruption, mic."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pytest

from inference.audio_io import pcm_to_s16
from inference.avatar.store import AvatarStore
from inference.engines.base import create_engine
from inference.frames import SAMPLES_PER_FRAME, FacePatch, LipSyncRequest
from inference.lipsync import audio_for_frames, window_rms
from inference.live import LOOKAHEAD_SAMPLES, WindowStream
from inference.mel import frame_count, mel_start, melspectrogram, window_for_frame
from inference.tts import Language, Speech, TextToSpeech, TtsError, VoiceOptions
from rtc.live.batcher import Batcher
from rtc.live.clock import ManualTime, MediaClock
from rtc.live.options import PipelineOptions
from rtc.live.pipeline import Pipeline
from tests.media import tone


class CountingViseme:
    """The viseme engine, counting frames (to prove idle never calls it)."""

    def __init__(self) -> None:
        self.inner = create_engine("viseme")
        self.name = "viseme"
        self.max_batch = 16
        self.finishes_frames = False
        self.frames = 0
        self.requests: list[LipSyncRequest] = []

    def infer(self, requests: list[LipSyncRequest]) -> list[FacePatch]:
        self.frames += len(requests)
        self.requests.extend(requests)
        return self.inner.infer(requests)


class RecordingTTS(TextToSpeech):
    """Delegates to espeak and keeps what it said (espeak's output varies between calls)."""

    name = "recording"

    def __init__(self, inner: TextToSpeech) -> None:
        self.inner = inner
        self.spoken: list[Speech] = []

    def languages(self) -> list[Language]:
        return self.inner.languages()

    def synthesize(self, text: str, language: str, options: VoiceOptions | None = None) -> Speech:
        speech = self.inner.synthesize(text, language)
        self.spoken.append(speech)
        return speech


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for work in other threads (TTS, batcher) to land; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.002)


class Rig:
    def __init__(
        self,
        avatar_store: AvatarStore,
        tts: TextToSpeech,
        options: PipelineOptions | None = None,
        avatar: str = "cartoon",
    ) -> None:
        self.time = ManualTime(0.0)
        self.clock = MediaClock(self.time, t0=0.0)
        self.engine = CountingViseme()
        self.batcher = Batcher(
            self.engine,  # type: ignore[arg-type]
            max_batch=16,
            max_wait=0.0,
            drop_expired=False,
        )
        self.events: list[dict[str, Any]] = []
        self.submitted: dict[int, LipSyncRequest] = {}
        self.pipeline = Pipeline(
            "test",
            self.clock,
            self.batcher,
            avatar_store.get(avatar),
            tts,
            self.events.append,
            options,
        )
        submit = self.batcher.submit

        def recording_submit(owner: str, requests: Any, deadlines: Any, finish: Any = None) -> Any:
            for request, deadline in zip(requests, deadlines, strict=True):
                self.submitted[round(deadline / 0.04)] = request
            return submit(owner, requests, deadlines, finish)

        self.batcher.submit = recording_submit  # type: ignore[method-assign]
        self.slot = 0
        self.drain = False
        self.played: list[np.ndarray] = []
        """Audio taken from the queue slot by slot when ``drain`` is set (like the track)."""

    async def step(self, slots: int = 1) -> None:
        """Move the clock slot by slot, letting the producer run at each."""
        for _ in range(slots):
            self.slot += 1
            self.time.set(self.slot * 0.04)
            for _ in range(3):
                await asyncio.sleep(0)
            if self.drain:
                self.pipeline.video_queue.take(self.slot)
                for k in (0, 1):
                    chunk = self.pipeline.audio_queue.take(2 * self.slot + k)
                    self.played.append(np.zeros(320, np.int16) if chunk is None else chunk)

    async def close(self) -> None:
        await self.pipeline.close()
        self.batcher.close()


@pytest.fixture
async def rig(avatar_store: AvatarStore, espeak_tts: TextToSpeech):
    r = Rig(avatar_store, RecordingTTS(espeak_tts))
    r.pipeline.start()
    yield r
    await r.close()


def test_window_stream_matches_the_offline_windows() -> None:
    rng = np.random.default_rng(1)
    pcm = (rng.standard_normal(16000 + 321) * 0.1).astype(np.float32)
    count = frame_count(pcm.size)
    audio = audio_for_frames(pcm, count)
    mel = melspectrogram(audio)
    for chunk in (320, 999, pcm.size):
        stream = WindowStream()
        frames = []
        for start in range(0, pcm.size, chunk):
            frames += stream.push(pcm[start : start + chunk])
        frames += stream.finish()
        assert [f.index for f in frames] == list(range(count))
        for f in frames:
            np.testing.assert_allclose(f.mel, window_for_frame(mel, f.index), atol=1e-5)
            np.testing.assert_array_equal(
                f.audio, audio[f.index * SAMPLES_PER_FRAME : (f.index + 1) * SAMPLES_PER_FRAME]
            )
            assert f.rms == pytest.approx(window_rms(audio, f.index))


def test_window_stream_look_ahead() -> None:
    stream = WindowStream()
    pcm = np.zeros(SAMPLES_PER_FRAME * 40, np.float32)
    available = []
    for n in range(0, pcm.size, 80):
        available += [(f.index, n + 80) for f in stream.push(pcm[n : n + 80])]
    # Frame i becomes ready as soon as the STFT frame ending its window is complete: about
    # 172.5 ms after its own audio (earlier by < 1 hop where mel_start rounds down).
    assert LOOKAHEAD_SAMPLES == 2760
    assert [index for index, _ in available] == list(range(len(available)))
    for index, received in available:
        need = mel_start(index) * 200 + 3400
        assert received - 80 < need <= received
        assert need - 160 < (index + 1) * SAMPLES_PER_FRAME + LOOKAHEAD_SAMPLES <= need + 160


def test_window_stream_of_nothing() -> None:
    stream = WindowStream()
    assert stream.push(np.zeros(0, np.float32)) == []
    assert stream.finish() == []


async def test_idle_frames_without_engine_calls(rig: Rig) -> None:
    for _ in range(25):
        await rig.step()
        assert rig.pipeline.video_queue.take(rig.slot) is not None  # a picture every slot
    assert rig.engine.frames == 0
    assert len(rig.pipeline.audio_queue) == 0  # silence
    assert rig.pipeline.stats.idle_frames >= 25


def test_idle_pictures_of_the_blinking_cartoon_hit_the_conversion_cache(rig: Rig) -> None:
    """Two blink periods of idle frames convert at most the open face and the two closures:
    every later blink frame is a cache hit (the cache is keyed by the picture's identity)."""
    for index in range(200):
        rig.pipeline.idle.frame(index)
    assert len(rig.pipeline.idle) <= 3


async def test_speech_frames_carry_their_own_audio(rig: Rig) -> None:
    await rig.step()
    rig.pipeline.say("Мама мыла раму.", "ru")
    await until(lambda: rig.pipeline.stats.speech_frames > 0)
    tts = rig.pipeline.speaker._tts
    assert isinstance(tts, RecordingTTS)
    (speech,) = tts.spoken
    first = min(rig.submitted)
    assert first > rig.slot + rig.pipeline.options.idle_lead  # far enough ahead to be ready
    count = frame_count(speech.pcm.size)
    expected_audio = pcm_to_s16(audio_for_frames(speech.pcm, count))
    mel = melspectrogram(audio_for_frames(speech.pcm, count))
    got_audio: list[np.ndarray] = []
    while len(got_audio) < 2 * count:
        await rig.step()
        slot = rig.slot
        if slot < first:
            continue
        j = slot - first
        # The picture of slot n was made from clip frame j's window ...
        np.testing.assert_allclose(rig.submitted[slot].mel, window_for_frame(mel, j), atol=1e-4)
        await until(partial(rig.pipeline.video_queue.__contains__, slot))
        assert rig.pipeline.video_queue.take(slot) is not None
        # ... and its two audio slots hold exactly clip frame j's samples.
        for k in (0, 1):
            half = rig.pipeline.audio_queue.take(2 * slot + k)
            assert half is not None
            got_audio.append(half)
    np.testing.assert_array_equal(np.concatenate(got_audio), expected_audio)
    await rig.step(rig.pipeline.options.max_ahead)
    kinds = [e["type"] for e in rig.events]
    assert kinds[:3] == ["utterance_queued", "speaking_started", "speaking_ended"]
    started = next(e for e in rig.events if e["type"] == "speaking_started")
    assert started["latency_ms"] > 0
    engine_frames = rig.engine.frames
    await rig.step(10)
    assert rig.engine.frames == engine_frames  # idle again: no engine calls


async def test_interrupt_flushes_every_queue(rig: Rig) -> None:
    await rig.step()
    utterance = rig.pipeline.say("Это длинное предложение. И ещё одно. И третье, последнее.", "ru")
    await until(lambda: rig.pipeline.stats.speech_frames > 0)
    await rig.step(5)
    generation = rig.pipeline.generation
    dropped = rig.pipeline.interrupt()
    assert dropped == [utterance.id]
    assert rig.pipeline.generation == generation + 1
    audio_slot = rig.clock.current_audio_index()
    last = rig.pipeline.audio_queue.last_slot()
    assert last is None or last <= audio_slot
    assert rig.batcher.pending == 0
    assert not rig.pipeline.speaking and not rig.pipeline.speaker.clips
    ended = [e for e in rig.events if e["type"] == "speaking_ended"]
    assert ended[-1]["interrupted"] and ended[-1]["utterance"] == utterance.id
    speech_before = rig.pipeline.stats.speech_frames
    for _ in range(10):
        await rig.step()
        assert rig.pipeline.audio_queue.take(2 * rig.slot) is None  # silent at once
        assert rig.pipeline.video_queue.take(rig.slot) is not None  # and idle pictures
    assert rig.pipeline.stats.speech_frames == speech_before


class FailingTTS(RecordingTTS):
    """Raises TtsError for sentences containing "Сбой" (like an engine crash)."""

    def synthesize(self, text: str, language: str, options: VoiceOptions | None = None) -> Speech:
        if "Сбой" in text:
            raise TtsError("injected failure")
        return super().synthesize(text, language)


async def test_every_accepted_utterance_ends_once_even_when_tts_fails(
    avatar_store: AvatarStore, espeak_tts: TextToSpeech
) -> None:
    rig = Rig(avatar_store, FailingTTS(espeak_tts))
    rig.pipeline.start()
    try:
        await rig.step()
        later = rig.pipeline.say("Да. Сбой.", "ru")  # fails on its second sentence
        first = rig.pipeline.say("Сбой.", "ru")  # fails on its first, queued behind
        fine = rig.pipeline.say("Нет.", "ru")
        for _ in range(200):
            await rig.step()
            await asyncio.sleep(0.005)  # let TTS threads land between slots
            if not rig.pipeline.speaking:
                break
        assert not rig.pipeline.speaking
        await rig.step(rig.pipeline.options.max_ahead)  # the last end mark is released
        ended = [e for e in rig.events if e["type"] == "speaking_ended"]
        assert [e["utterance"] for e in ended] == [later.id, first.id, fine.id]
        assert [e.get("error") for e in ended] == [
            "speech synthesis failed: injected failure",
            "speech synthesis failed: injected failure",
            None,
        ]
        assert not any(e["interrupted"] for e in ended)
        started = {e["utterance"] for e in rig.events if e["type"] == "speaking_started"}
        assert started == {later.id, fine.id}  # nothing of the first-sentence failure played
        errors = [e["utterance"] for e in rig.events if e["type"] == "error"]
        assert errors == [later.id, first.id]
    finally:
        await rig.close()


async def test_interrupt_after_the_last_frame_was_scheduled_still_ends_it_once(rig: Rig) -> None:
    # The utterance is fully scheduled (its end waits for its last slot) when the interrupt
    # comes: the flushed end must still be announced, once, as interrupted.
    await rig.step()
    utterance = rig.pipeline.say("Да.", "ru")
    await until(lambda: rig.pipeline.stats.speech_frames > 0)
    while rig.pipeline.speaking:
        await rig.step()
        await asyncio.sleep(0.005)
    assert not any(e["type"] == "speaking_ended" for e in rig.events)  # not released yet
    assert rig.pipeline.interrupt() == [utterance.id]
    await rig.step(rig.pipeline.options.max_ahead + 2)
    ended = [e for e in rig.events if e["type"] == "speaking_ended"]
    assert len(ended) == 1 and ended[0]["utterance"] == utterance.id
    assert ended[0]["interrupted"] is True


async def test_the_speaker_hands_an_utterance_over_with_its_last_clip(rig: Rig) -> None:
    # Control flows one way: once the pipeline has taken an utterance's last sentence, the
    # speaker no longer holds it, and an interrupt still ends it exactly once.
    await rig.step()
    utterance = rig.pipeline.say("Это одно длинное предложение без точки посередине", "ru")
    await until(lambda: rig.pipeline.stats.speech_frames > 0)
    assert utterance not in rig.pipeline.speaker.utterances
    assert rig.pipeline.speaking  # its frames are still being scheduled
    assert rig.pipeline.interrupt() == [utterance.id]
    ended = [e for e in rig.events if e["type"] == "speaking_ended"]
    assert [e["utterance"] for e in ended] == [utterance.id] and ended[0]["interrupted"]


@pytest.mark.parametrize("echo", [True, False])
async def test_microphone_drives_the_mouth_with_look_ahead(
    avatar_store: AvatarStore, espeak_tts: TextToSpeech, echo: bool
) -> None:
    rig = Rig(avatar_store, espeak_tts, PipelineOptions(echo_mic=echo))
    rig.drain = True
    rig.pipeline.start()
    try:
        voice = np.concatenate(
            (np.zeros(8000, np.float32), tone(220, 1.0, amplitude=0.3), np.zeros(16000, np.float32))
        )
        received = 0
        for _ in range(voice.size // 320):  # 20 ms chunks, as they come from the browser
            if received % 640 == 0:
                await rig.step()
                await until(lambda: rig.batcher.pending == 0)
            rig.pipeline.push_mic(voice[received : received + 320])
            received += 320
        await rig.step(rig.pipeline.options.max_ahead + 2)
        await until(lambda: rig.batcher.pending == 0)
    finally:
        await rig.close()
    stats = rig.pipeline.stats
    loud = round(1.0 * 25)
    # The tone's frames, plus those whose 200 ms windows overlap its edges.
    assert loud <= stats.mic_frames <= loud + 10
    assert stats.mic_dropped == 0
    # Frames are released after their audio arrived plus the look-ahead and the jitter margin.
    assert stats.mic_latency is not None
    assert 0.17 <= stats.mic_latency <= 0.17 + 0.04 * 6
    assert rig.engine.frames == stats.mic_frames  # silence before/after: no engine calls
    played = np.concatenate(rig.played).astype(np.float32) / 32767
    if not echo:
        assert not played.any()  # a caller does not hear themselves
        return
    # The presenter's voice comes back whole, delayed by exactly the look-ahead schedule.
    loud_samples = np.flatnonzero(np.abs(played) > 0.01)
    sent = np.flatnonzero(np.abs(voice) > 0.01)
    assert loud_samples.size == pytest.approx(sent.size, rel=0.02)
    delay = (loud_samples[0] - sent[0]) / 16000
    assert 0.17 <= delay <= 0.17 + 0.04 * 6 + 0.04


class SlowService(RecordingTTS):
    """A remote-service stand-in: each sentence takes 0.3 s; requests may overlap."""

    def __init__(self, inner: TextToSpeech, parallel: int) -> None:
        super().__init__(inner)
        self.parallel = parallel
        self.calls: list[tuple[float, float]] = []

    def parallel_sentences(self, language: str) -> int:
        return self.parallel

    def synthesize(self, text: str, language: str, options: VoiceOptions | None = None) -> Speech:
        began = time.monotonic()
        time.sleep(0.3)
        speech = super().synthesize(text, language)
        self.calls.append((began, time.monotonic()))
        return speech


@pytest.mark.parametrize("parallel", [1, 3])
async def test_remote_sentences_are_requested_ahead_in_parallel(
    avatar_store: AvatarStore, espeak_tts: TextToSpeech, parallel: int
) -> None:
    tts = SlowService(espeak_tts, parallel)
    rig = Rig(avatar_store, tts)
    rig.pipeline.start()
    try:
        await rig.step()
        rig.pipeline.say("Раз. Два. Три.", "ru")
        await until(lambda: len(tts.calls) == 3, timeout=10)
    finally:
        await rig.close()
    starts = sorted(start for start, _ in tts.calls)
    if parallel == 3:  # all three asked for at once: none waits for the one before
        assert starts[2] - starts[0] < 0.2, starts
    else:  # one at a time (a local library behind one lock gains nothing from more)
        assert starts[1] - starts[0] >= 0.29 and starts[2] - starts[1] >= 0.29, starts


async def test_a_face_switched_mid_speech_dissolves_into_the_new_one(
    avatar_store: AvatarStore, espeak_tts: TextToSpeech
) -> None:
    """The frames already made keep the old face, the next ones blend old into new with a
    rising share of the new one, then the new face alone: no cut while speaking."""
    import dataclasses

    from rtc.live.crossfade import FADE_FRAMES

    rig = Rig(avatar_store, RecordingTTS(espeak_tts), avatar="astronaut")
    old = rig.pipeline.avatar
    negative = dataclasses.replace(
        old,
        name="negative",
        frames=tuple(
            dataclasses.replace(f, image=np.ascontiguousarray(255 - f.image)) for f in old.frames
        ),
    )
    corner = (slice(0, 48), slice(0, 48))  # background: far from the mouth

    def brightness(frame: Any) -> float:
        return float(frame.to_ndarray(format="bgr24")[corner].mean())

    rig.pipeline.start()
    try:
        rig.pipeline.say("Раз, два, три, четыре, пять, шесть, семь, восемь, девять.", "ru")
        await until(lambda: rig.pipeline.stats.speech_frames > 0)
        await rig.step(5)
        rig.pipeline.switch_avatar(negative)
        seen: list[float] = []
        for _ in range(3 * rig.pipeline.options.max_ahead + 2 * FADE_FRAMES):
            await rig.step()
            await until(partial(rig.pipeline.video_queue.__contains__, rig.slot))
            frame = rig.pipeline.video_queue.take(rig.slot)
            assert frame is not None
            seen.append(brightness(frame))
    finally:
        await rig.close()
    before, after = brightness_of(old), brightness_of(negative)
    assert abs(seen[0] - before) < 2 and abs(seen[-1] - after) < 2
    between = [b for b in seen if min(before, after) + 5 < b < max(before, after) - 5]
    assert len(between) >= FADE_FRAMES - 2, seen  # a dissolve, not a cut
    step = 1 if after > before else -1
    assert all(step * (b - a) >= -1 for a, b in itertools.pairwise(seen)), seen


def brightness_of(avatar: Any) -> float:
    """The corner brightness of an avatar's own picture."""
    return float(avatar.frames[0].image[0:48, 0:48].mean())
