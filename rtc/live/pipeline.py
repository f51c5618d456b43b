"""The per-session producer: fills the track queues slot by slot.

Every video slot ``n`` of the session's clock gets exactly one picture and its 2 x 20 ms of
audio, from one of three sources, in this order of precedence:

* speech (``say``): TTS sentences -> windows -> batcher -> composited frames;
* the caller's microphone: 20 ms chunks -> windows (the engine's look-ahead) -> batcher;
  its audio is sent back with the face only when ``echo_mic`` is set;
* idle: the avatar's loop/blinks and silence, without calling the engine.

Whatever its source, a still photo's picture sways with the head and breathes on its way into
the video queue (rtc/live/motion.py), so speech starts and ends without a jump.

Audio is known before its picture, so it is queued as soon as a frame is scheduled; the
picture follows when the batcher returns it. A picture that misses its slot is skipped by
the video track while the audio plays on. Speech is scheduled at most ``max_ahead`` frames
ahead of the clock (bounded queues, bounded interruption cost) and starts far enough ahead
that the batcher's measured latency fits. Interruption bumps the generation id and flushes
the utterances, synthesised sentences, batcher and both track queues.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import av
import numpy as np

from inference.audio_io import pcm_to_s16
from inference.avatar.store import Avatar
from inference.frames import LipSyncRequest, StreamState
from inference.lipsync import frame_request, phoneme_at
from inference.live import FrameAudio
from inference.tts import TextToSpeech, VoiceOptions
from rtc.live.batcher import Batcher
from rtc.live.clock import AUDIO_PER_VIDEO, AUDIO_SAMPLES, MediaClock
from rtc.live.crossfade import CrossFade, finishing_parts
from rtc.live.event_kinds import (
    ErrorEvent,
    LiveEvent,
    SpeakingEnded,
    SpeakingStarted,
    UtteranceQueued,
)
from rtc.live.idle import IdleSource
from rtc.live.mic import MicScheduler
from rtc.live.motion import FrameMotion
from rtc.live.options import PipelineOptions, PipelineStats
from rtc.live.queues import SlotQueue
from rtc.live.speech import Clip, Speaker, Utterance

log = logging.getLogger(__name__)

Event = dict[str, Any]


class Pipeline:
    """Produces a session's frames; the tracks read :attr:`video_queue` / :attr:`audio_queue`."""

    def __init__(
        self,
        session_id: str,
        clock: MediaClock,
        batcher: Batcher,
        avatar: Avatar,
        tts: TextToSpeech,
        emit: Callable[[Event], None],
        options: PipelineOptions | None = None,
    ) -> None:
        self.session_id = session_id
        self.clock = clock
        self.batcher = batcher
        self.avatar = avatar
        self.options = options or PipelineOptions()
        self.stats = PipelineStats()
        self._emit = emit
        ahead = self.options.max_ahead + self.options.idle_lead + 10
        self.video_queue: SlotQueue[av.VideoFrame] = SlotQueue(ahead)
        self.audio_queue: SlotQueue[np.ndarray] = SlotQueue(ahead * AUDIO_PER_VIDEO)
        self.speaker = Speaker(
            session_id,
            tts,
            on_clip=self._schedule,
            on_error=self._speech_error,
            now=clock.now,
            max_utterances=self.options.max_utterances,
            lookahead_frames=batcher.engine.lookahead_frames,
        )
        self.generation = 0
        self._next = clock.current_video_index() + 1
        self._clip: Clip | None = None
        self._marks: dict[int, list[LiveEvent]] = {}
        """Events waiting for the slot whose release they announce."""
        self._announced: set[str] = set()
        lookahead = batcher.engine.lookahead_frames  # mic frames are ready when it has come
        self.mic = MicScheduler(self.options.mic_backlog, self.options.silence_rms, lookahead)
        self.idle = IdleSource(avatar)
        self.motion = FrameMotion.for_session(session_id, self.options)
        self.fade: CrossFade | None = None
        """The dissolve of a face switched mid-speech, while it lasts."""
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        first = self._next - 1
        self.first_frame = self.motion.apply(avatar, first, self.idle.frame(first))

    # --- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start producing (idempotent)."""
        if self._task is None and not self._closed:
            self.speaker.start()
            self._task = asyncio.create_task(self._run(), name=f"pipeline-{self.session_id}")

    async def close(self) -> None:
        """Stop every task and drop every queued item (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.generation += 1
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.speaker.close()
        self.speaker.interrupt()
        self.batcher.flush(self.session_id)
        self.video_queue.flush()
        self.audio_queue.flush()
        self.mic.clear()
        self._marks.clear()

    async def _run(self) -> None:
        slot = self.clock.current_video_index()
        while True:
            self._schedule()
            slot = max(slot + 1, self.clock.current_video_index() + 1)
            await self.clock.wait_video(slot)

    # --- inputs ------------------------------------------------------------------------

    @property
    def speaking(self) -> bool:
        """Whether an utterance is queued or playing."""
        return bool(self.speaker.utterances) or self._clip is not None

    def depths(self) -> dict[str, int]:
        """Items waiting in each of the session's queues (a snapshot for /metrics, so the
        metrics need not know what the pipeline is made of)."""
        utterances, sentences = self.speaker.depths()
        return {
            "video": len(self.video_queue),
            "audio": len(self.audio_queue),
            "utterances": utterances,
            "sentences": sentences,
            "batcher": self.batcher.pending,
        }

    def say(self, text: str, language: str, options: VoiceOptions | None = None) -> Utterance:
        """Queue an utterance (text, language, voice already validated); QueueFull when full."""
        utterance = self.speaker.say(text, language, options)
        self.stats.utterances += 1
        self._emit(UtteranceQueued(utterance.id, len(utterance.sentences)).to_wire())
        return utterance

    def interrupt(self) -> list[str]:
        """Stop speaking now: drop every queued and playing utterance; return their ids."""
        dropped = self.speaker.interrupt()
        if self._clip is not None and self._clip.utterance not in dropped:
            dropped.insert(0, self._clip.utterance)
        self.generation += 1
        self._clip = None
        self.batcher.flush(self.session_id)
        slot = self.clock.current_video_index()
        # The current audio slot has been sent already; everything after it goes.
        self.audio_queue.flush(after=self.clock.current_audio_index())
        self.video_queue.flush(after=slot)
        # Utterances scheduled to the end, whose speaking_ended waits for their last slot,
        # were cut short too: their end is announced here, or never (the marks go).
        cut = [
            (e.utterance, e.error)
            for index in sorted(self._marks)
            for e in self._marks[index]
            if isinstance(e, SpeakingEnded)
        ]
        self._marks.clear()
        self._next = slot + 1
        for uid, error in [*cut, *((u.id, u.error) for u in dropped)]:
            ended = SpeakingEnded(
                uid, interrupted=True, started=uid in self._announced, error=error
            )
            self._emit(ended.to_wire())
            self._announced.discard(uid)
        self._schedule()
        return [uid for uid, _ in cut] + [u.id for u in dropped]

    def switch_avatar(self, avatar: Avatar) -> None:
        """Show ``avatar`` from now on: frames not yet made use it; idle pictures already
        queued are replaced at once (within a frame); speech frames already made play out,
        and the next ones dissolve from the old face into the new (rtc/live/crossfade.py)."""
        if avatar is self.avatar:
            return
        if self.speaking:
            self.fade = CrossFade.between(self.avatar, avatar, self._next)
        self.avatar = avatar
        self.idle = IdleSource(avatar)
        if not self.speaking:
            for index in range(self.clock.current_video_index() + 1, self._next):
                self._put_video(index, self.idle.frame(index))

    def push_mic(self, pcm: np.ndarray) -> None:
        """Add caller audio (16 kHz mono float32); frames are scheduled as windows complete."""
        if self._closed:
            return
        completed = self.mic.push(pcm, self.clock.now())
        self.stats.mic_dropped = self.mic.dropped
        if completed:
            self._schedule()

    # --- scheduling --------------------------------------------------------------------

    def _speech_lead(self, extra: float = 0.0) -> int:
        """Slots from the current one to the first slot new speech may use: the first one
        released after the batcher's measured latency (plus margins) has passed."""
        ready = self.clock.now() + self.batcher.stats.latency + self.options.margin + extra
        first = self.clock.video_index_at(ready) + 1
        return max(self.options.idle_lead + 1, first - self.clock.current_video_index())

    def _schedule(self) -> None:
        """Fill the queues up to the horizon; called every slot and on every new input."""
        if self._closed:
            return
        slot = self.clock.current_video_index()
        self._release_marks(slot)
        self._next = max(self._next, slot + 1)
        lead = self._speech_lead()
        horizon = slot + max(self.options.max_ahead, lead + self.options.chunk)
        batch: list[tuple[int, LipSyncRequest]] = []
        if self.speaking:
            self.mic.clear()  # speech owns the face; the caller's frames are not shown
            self._schedule_speech(slot, lead, horizon, batch)
        else:
            self._schedule_mic(slot, self._speech_lead(self.options.mic_jitter), horizon, batch)
        while self._next <= slot + self.options.idle_lead:
            self._place_idle(self._next)
            self._next += 1
        self._submit(batch)

    def _schedule_speech(
        self, slot: int, lead: int, horizon: int, batch: list[tuple[int, LipSyncRequest]]
    ) -> None:
        if self._clip is not None and horizon - self._next + 1 < self.options.chunk:
            return  # keep batches whole: wait until a full chunk fits
        while self._next <= horizon:
            if self._clip is None:
                clip = self.speaker.take_clip()
                if clip is None:
                    return
                self._start_clip(clip, slot, lead)
            clip = self._clip
            assert clip is not None
            if not clip.frames:
                self._end_clip(clip)
                continue
            fa = clip.frames.popleft()
            index = self._next
            phoneme = phoneme_at(clip.timeline, fa.index)
            batch.append((index, self._request(fa, index, phoneme, clip.utterance.state)))
            self._place_audio(index, fa.audio)
            self.stats.speech_frames += 1
            self._next = index + 1

    def _start_clip(self, clip: Clip, slot: int, lead: int) -> None:
        # An empty clip (synthesis failed) only ends its utterance: no need to wait for the batcher.
        start = max(self._next, slot + lead) if clip.frames else self._next
        for index in range(self._next, start):  # the batcher needs that long: idle until then
            self._place_idle(index)
        self._next = start
        utterance = clip.utterance
        if not utterance.started and clip.frames:
            utterance.started = True
            latency = self.clock.video_time(start) - utterance.requested
            started = SpeakingStarted(utterance.id, latency_ms=round(latency * 1000, 1))
            self._marks.setdefault(start, []).append(started)
        self._clip = clip

    def _end_clip(self, clip: Clip) -> None:
        self._clip = None
        if clip.last:
            ended = SpeakingEnded(clip.utterance.id, interrupted=False, error=clip.utterance.error)
            self._marks.setdefault(self._next, []).append(ended)

    def _schedule_mic(
        self, slot: int, lead: int, horizon: int, batch: list[tuple[int, LipSyncRequest]]
    ) -> None:
        for item in self.mic.take(self._next, slot + lead, horizon):
            index = item.slot
            for gap in range(self._next, index):
                self._place_idle(gap)
            audio = item.audio.audio if self.options.echo_mic else None
            if item.closed:  # the mouth has closed: no engine call for silence
                self._place_idle(index, audio)
            else:
                batch.append((index, self._request(item.audio, index, None, self.mic.state)))
                if audio is not None:
                    self._place_audio(index, audio)
                self.stats.mic_frames += 1
            latency = self.clock.video_time(index) - item.arrived
            previous = self.stats.mic_latency
            self.stats.mic_latency = (
                latency if previous is None else (0.9 * previous + 0.1 * latency)
            )
            self._next = index + 1
        self.stats.mic_dropped = self.mic.dropped

    def _request(
        self, fa: FrameAudio, index: int, phoneme: str | None, state: StreamState
    ) -> LipSyncRequest:
        return frame_request(
            fa.mel, fa.rms, self.avatar, index, self.options.silence_rms, phoneme, state
        )

    def _submit(self, batch: list[tuple[int, LipSyncRequest]]) -> None:
        fade = self.fade
        if fade is not None and batch and fade.done(batch[0][0]):
            fade = self.fade = None
        for part, finish in finishing_parts(fade, batch):
            indices = [index for index, _ in part]
            futures = self.batcher.submit(
                self.session_id,
                [r for _, r in part],
                [self.clock.video_time(i) for i in indices],
                finish=finish,
            )
            for index, future in zip(indices, futures, strict=True):
                future.add_done_callback(partial(self._on_result, self.generation, index))

    def _on_result(self, generation: int, index: int, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or generation != self.generation or self._closed:
            return
        error = future.exception()
        if error is not None:
            message = f"lip-sync engine failed: {error}"
            if message not in self.stats.errors:
                self.stats.errors.append(message)
                self._emit(ErrorEvent(message).to_wire())
            return
        frame = future.result()
        if frame is None:
            self.stats.expired += 1
            return
        if not self._put_video(index, frame):
            self.stats.late += 1
            log.debug(
                "session=%s frame %d came back after its slot (now %d)",
                self.session_id,
                index,
                self.clock.current_video_index(),
            )

    # --- placing frames ----------------------------------------------------------------

    def _place_audio(self, index: int, audio: np.ndarray) -> None:
        s16 = pcm_to_s16(audio)
        for k in range(AUDIO_PER_VIDEO):
            self.audio_queue.put(
                index * AUDIO_PER_VIDEO + k, s16[k * AUDIO_SAMPLES : (k + 1) * AUDIO_SAMPLES]
            )

    def _put_video(self, index: int, frame: av.VideoFrame) -> bool:
        """Every picture enters the queue here, moved by the head's sway (rtc/live/motion.py)."""
        return self.video_queue.put(index, self.motion.apply(self.avatar, index, frame))

    def _place_idle(self, index: int, audio: np.ndarray | None = None) -> None:
        self._put_video(index, self.idle.frame(index))
        if audio is not None:
            self._place_audio(index, audio)
        self.stats.idle_frames += 1

    def _release_marks(self, slot: int) -> None:
        for index in sorted(i for i in self._marks if i <= slot):
            for event in self._marks.pop(index):
                if isinstance(event, SpeakingStarted):
                    self._announced.add(event.utterance)
                    self.stats.first_frame_latency = event.latency_ms / 1000
                elif isinstance(event, SpeakingEnded):
                    self._announced.discard(event.utterance)
                self._emit(event.to_wire())

    def _speech_error(self, utterance: Utterance, message: str) -> None:
        self.stats.errors.append(message)
        self._emit(ErrorEvent(message, utterance=utterance.id).to_wire())
