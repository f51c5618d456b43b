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
from inference.engines.viseme_sound import LOOKAHEAD_FRAMES as VISEME_LOOKAHEAD
from inference.frames import MEL_STEP, SAMPLES_PER_FRAME, FacePatch, LipSyncRequest
from inference.lipsync import audio_for_frames, window_rms
from inference.live import LOOKAHEAD_SAMPLES, WindowStream, lookahead_samples
from inference.mel import (
    MIN_VALUE,
    frame_count,
    mel_start,
    melspectrogram,
    window_for_frame,
)
from inference.tts import Language, Speech, TextToSpeech, TtsError, VoiceOptions
from rtc.live.batcher import Batcher
from rtc.live.clock import ManualTime, MediaClock
from rtc.live.options import PipelineOptions
from rtc.live.pipeline import Pipeline
from tests.media import tone


class CountingViseme:
    """The viseme engine, counting frames (to prove idle never calls it); ``lookahead_frames``
    16 makes it wait for whole windows as Wav2Lip does (it reads only the first 6 of them)."""

    def __init__(self, lookahead_frames: int | None = None) -> None:
        self.inner = create_engine("viseme")
        self.name = "viseme"
        self.max_batch = 16
        self.finishes_frames = False
        self.lookahead_frames = lookahead_frames or self.inner.lookahead_frames
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
        lookahead_frames: int | None = None,
    ) -> None:
        self.time = ManualTime(0.0)
        self.clock = MediaClock(self.time, t0=0.0)
        self.engine = CountingViseme(lookahead_frames)
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
        self.played_at: dict[int, np.ndarray] = {}
        """The same, by video slot (both 20 ms chunks of the slot)."""

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
                self.played_at[self.slot] = np.concatenate(self.played[-2:])

    async def close(self) -> None:
        await self.pipeline.close()
        self.batcher.close()


@pytest.fixture
async def rig(avatar_store: AvatarStore, espeak_tts: TextToSpeech):
    r = Rig(avatar_store, RecordingTTS(espeak_tts))
    r.pipeline.start()
    yield r
    await r.close()


@pytest.mark.parametrize("lookahead", [MEL_STEP, VISEME_LOOKAHEAD])
def test_window_stream_matches_the_offline_windows(lookahead: int) -> None:
    """Pushed in any chunks, a stream's frames carry the renderer's audio and silence test;
    whole windows for an engine that reads them all (Wav2Lip never gets a partial one),
    the first ``lookahead`` columns for one that reads fewer, and the renderer's very
    windows when the clip is handed over whole (TTS)."""
    rng = np.random.default_rng(1)
    pcm = (rng.standard_normal(16000 + 321) * 0.1).astype(np.float32)
    pcm[5000:9000] = 0.0  # a pause, so that some frames are silent and others are not
    count = frame_count(pcm.size)
    audio = audio_for_frames(pcm, count)
    mel = melspectrogram(audio)
    for chunk in (320, 999, pcm.size):
        stream = WindowStream(lookahead)
        frames, early = [], 0
        for start in range(0, pcm.size, chunk):
            frames += stream.push(pcm[start : start + chunk])
            early = len(frames)  # emitted before the stream ended
        frames += stream.finish()
        assert [f.index for f in frames] == list(range(count))
        for f in frames:
            offline = window_for_frame(mel, f.index)
            if lookahead == MEL_STEP or f.index >= early:
                np.testing.assert_allclose(f.mel, offline, atol=1e-5)
            elif mel_start(f.index) + MEL_STEP <= mel.shape[1]:  # not the renderer's tail
                np.testing.assert_allclose(f.mel[:, :lookahead], offline[:, :lookahead], atol=1e-5)
            np.testing.assert_array_equal(
                f.audio, audio[f.index * SAMPLES_PER_FRAME : (f.index + 1) * SAMPLES_PER_FRAME]
            )
            assert f.rms == pytest.approx(window_rms(audio, f.index, lookahead))
    whole = WindowStream(lookahead).finish(pcm)
    assert len(whole) == count
    for f in whole:
        np.testing.assert_allclose(f.mel, window_for_frame(mel, f.index), atol=1e-5)
        assert f.rms == pytest.approx(window_rms(audio, f.index, lookahead))
    flags = [window_rms(audio, i, lookahead) < 0.004 for i in range(count)]
    assert any(flags) and not all(flags)


@pytest.mark.parametrize(
    ("lookahead", "samples"), [(MEL_STEP, LOOKAHEAD_SAMPLES), (VISEME_LOOKAHEAD, 760)]
)
def test_window_stream_look_ahead_is_the_engines(lookahead: int, samples: int) -> None:
    """Frame i is emitted as soon as the STFT frame ending the part of its window the engine
    reads is complete: 172.5 ms after its own audio for Wav2Lip's whole window, 47.5 ms for
    the viseme engine's 6 mel frames (earlier by < 1 hop where mel_start rounds down); the
    columns not there yet are silence."""
    assert LOOKAHEAD_SAMPLES == lookahead_samples() == 2760
    assert lookahead_samples(lookahead) == samples
    stream = WindowStream(lookahead)
    rng = np.random.default_rng(2)
    pcm = (rng.standard_normal(SAMPLES_PER_FRAME * 40) * 0.1).astype(np.float32)
    available = []
    for n in range(0, pcm.size, 80):
        available += [(f, n + 80) for f in stream.push(pcm[n : n + 80])]
    assert [f.index for f, _ in available] == list(range(len(available)))
    assert len(available) >= 40 - 2 - samples // SAMPLES_PER_FRAME
    for frame, received in available:
        need = (mel_start(frame.index) + lookahead - 1) * 200 + 400
        assert received - 80 < need <= received
        own = (frame.index + 1) * SAMPLES_PER_FRAME
        assert need - 160 <= own + samples <= need + 160
        # What the engine reads is there; what is not there yet is silence, never stale data.
        assert (frame.mel[:, :lookahead] > MIN_VALUE).any()
        present = (received - 400) // 200 + 1 - mel_start(frame.index)  # columns that exist
        assert lookahead <= present <= lookahead + 1
        assert (frame.mel[:, present:] == MIN_VALUE).all()


def test_window_stream_refuses_a_look_ahead_outside_the_window() -> None:
    for bad in (0, MEL_STEP + 1):
        with pytest.raises(ValueError, match="lookahead_frames"):
            WindowStream(bad)


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


async def feed_mic(rig: Rig, voice: np.ndarray) -> None:
    """Push ``voice`` in 20 ms chunks as they come from the browser, the clock moving a slot
    every two, then let every scheduled frame play out."""
    received = 0
    for _ in range(voice.size // 320):
        if received % 640 == 0:
            await rig.step()
            await until(lambda: rig.batcher.pending == 0)
        rig.pipeline.push_mic(voice[received : received + 320])
        received += 320
    await rig.step(rig.pipeline.options.max_ahead + 2)
    await until(lambda: rig.batcher.pending == 0)


@pytest.mark.parametrize("lookahead", [None, MEL_STEP])  # the viseme engine's 6, Wav2Lip's 16
@pytest.mark.parametrize("echo", [True, False])
async def test_microphone_drives_the_mouth_with_the_engines_look_ahead(
    avatar_store: AvatarStore, espeak_tts: TextToSpeech, echo: bool, lookahead: int | None
) -> None:
    rig = Rig(avatar_store, espeak_tts, PipelineOptions(echo_mic=echo), lookahead_frames=lookahead)
    rig.drain = True
    rig.pipeline.start()
    voice = np.concatenate(
        (np.zeros(8000, np.float32), tone(220, 1.0, amplitude=0.3), np.zeros(16000, np.float32))
    )
    try:
        await feed_mic(rig, voice)
    finally:
        await rig.close()
    stats = rig.pipeline.stats
    loud = round(1.0 * 25)
    # The tone's frames, plus those whose 200 ms silence tests overlap its edges.
    assert loud <= stats.mic_frames <= loud + 10
    assert stats.mic_dropped == 0
    # Frames are released after their audio arrived plus the engine's look-ahead and the
    # scheduling lead (the batcher's latency, 20 ms of margin and 20 of jitter allowance).
    wait = lookahead_samples(rig.engine.lookahead_frames) / 16000
    assert stats.mic_latency is not None
    # (The bound is tight enough that the viseme engine waiting for whole windows fails it.)
    assert wait - 0.01 <= stats.mic_latency <= wait + 0.04 * 5
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
    assert wait - 0.01 <= delay <= wait + 0.04 * 6


@pytest.mark.parametrize("lookahead", [None, MEL_STEP])
async def test_a_mic_frames_picture_and_sound_leave_in_the_same_slot(
    avatar_store: AvatarStore, espeak_tts: TextToSpeech, lookahead: int | None
) -> None:
    """Each slot's picture is made from the window of the very frame whose audio the slot
    releases, however early the engine's look-ahead lets the frame go; an engine that reads
    whole windows (Wav2Lip) gets whole ones."""
    rig = Rig(avatar_store, espeak_tts, PipelineOptions(echo_mic=True), lookahead_frames=lookahead)
    rig.drain = True
    rig.pipeline.start()
    rng = np.random.default_rng(3)
    # Noise whose loudness changes every 40 ms frame, so that no two windows look alike.
    frames = 40
    gains = np.repeat(rng.uniform(0.05, 0.4, frames), SAMPLES_PER_FRAME).astype(np.float32)
    noise = rng.standard_normal(frames * SAMPLES_PER_FRAME).astype(np.float32) * gains
    voice = np.concatenate((noise, np.zeros(8 * SAMPLES_PER_FRAME, np.float32)))
    try:
        await feed_mic(rig, voice)
    finally:
        await rig.close()
    n = rig.engine.lookahead_frames
    offline = melspectrogram(audio_for_frames(voice, frame_count(voice.size)))
    # The slot of mic frame 0, from the sound the first slot with a picture released.
    first = min(rig.submitted)
    chunks = [pcm_to_s16(voice[i : i + SAMPLES_PER_FRAME]) for i in range(0, 40 * 640, 640)]
    (frame0,) = [first - j for j, c in enumerate(chunks) if np.array_equal(rig.played_at[first], c)]
    assert len(rig.submitted) >= frames - 2
    for slot, request in rig.submitted.items():
        j = slot - frame0  # the mic frame this slot carries
        if j >= frames:
            continue  # the silence after the noise
        np.testing.assert_array_equal(rig.played_at[slot], chunks[j])
        window = window_for_frame(offline, j)
        np.testing.assert_allclose(request.mel[:, :n], window[:, :n], atol=1e-5)
        if n == MEL_STEP:  # never a partial window for an engine that reads it all
            np.testing.assert_allclose(request.mel, window, atol=1e-5)


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
