"""Utterances of a realtime session: queued text, synthesised sentence by sentence.

The first sentence is synthesised and handed to the pipeline while the rest waits, so speech
starts after one sentence's TTS, not the whole text's. At most ``max_clips`` synthesised
sentences wait for the pipeline (bounded memory); an interruption bumps the generation id and
everything of the old generation is dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from inference.frames import MEL_STEP, StreamState
from inference.lipsync import PhonemeTimeline
from inference.live import FrameAudio, WindowStream
from inference.tts import Speech, TextToSpeech, TtsError, VoiceOptions, split_sentences

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """Too many utterances are waiting; the caller should retry later or interrupt."""


@dataclass
class Utterance:
    """One ``say`` request."""

    id: str
    text: str
    language: str
    sentences: list[str]
    requested: float
    """Clock time of the request (for the text -> first frame latency)."""
    generation: int
    state: StreamState = field(default_factory=StreamState)
    """Engine smoothing state shared by the utterance's sentences."""
    started: bool = False
    error: str | None = None
    """Why synthesis failed (its speaking_ended event carries it); None while all is well."""
    options: VoiceOptions | None = None
    """The voice, speed and pitch it asked for (None: the language's defaults)."""


@dataclass
class Clip:
    """One synthesised sentence, ready to be scheduled frame by frame."""

    utterance: Utterance
    frames: deque[FrameAudio]
    timeline: PhonemeTimeline | None
    last: bool
    """The utterance's final sentence."""


def sentence_frames(pcm: np.ndarray, lookahead_frames: int = MEL_STEP) -> list[FrameAudio]:
    """All frames of one finished clip, with the windows and silence flags the offline
    renderer gives the engine whose look-ahead is ``lookahead_frames``."""
    return WindowStream(lookahead_frames).finish(pcm)


class Speaker:
    """Synthesises queued utterances into :class:`Clip` objects, in order, one task."""

    def __init__(
        self,
        session_id: str,
        tts: TextToSpeech,
        *,
        on_clip: Callable[[], None],
        on_error: Callable[[Utterance, str], None],
        now: Callable[[], float],
        max_utterances: int = 16,
        max_clips: int = 2,
        lookahead_frames: int = MEL_STEP,
    ) -> None:
        self.session_id = session_id
        self._tts = tts
        self._on_clip = on_clip
        self._on_error = on_error
        self._now = now
        self.max_utterances = max_utterances
        self.max_clips = max_clips
        self.lookahead_frames = lookahead_frames
        """The engine's look-ahead (its silence test spans the 200 ms ending with it)."""
        self.generation = 0
        self.utterances: deque[Utterance] = deque()
        """Utterances not yet handed to the pipeline in full, oldest first (bounded by
        max_utterances)."""
        self.clips: deque[Clip] = deque()
        self._ids = itertools.count(1)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the synthesis task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"speaker-{self.session_id}")

    async def close(self) -> None:
        """Stop the synthesis task (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def say(self, text: str, language: str, options: VoiceOptions | None = None) -> Utterance:
        """Queue ``text`` (spoken with ``options``); QueueFull when max_utterances wait."""
        if len(self.utterances) >= self.max_utterances:
            raise QueueFull(
                f"{len(self.utterances)} utterances are already queued; wait or interrupt"
            )
        sentences = split_sentences(text) or [text]
        utterance = Utterance(
            id=f"u{next(self._ids)}",
            text=text,
            language=language,
            sentences=sentences,
            requested=self._now(),
            generation=self.generation,
            options=options,
        )
        self.utterances.append(utterance)
        self._wake.set()
        return utterance

    def interrupt(self) -> list[Utterance]:
        """Drop every queued and speaking utterance; return them."""
        self.generation += 1
        dropped = list(self.utterances)
        self.utterances.clear()
        self.clips.clear()
        self._wake.set()  # a synthesis waiting for room must notice the new generation
        return dropped

    def take_clip(self) -> Clip | None:
        """The next synthesised clip, or None: the one way clips reach the pipeline. Taking
        one makes room for the next sentence's synthesis; taking an utterance's last clip
        hands the utterance over (the pipeline ends it, or reports it when interrupted), so
        nothing flows back from the pipeline to the speaker."""
        if not self.clips:
            return None
        clip = self.clips.popleft()
        if clip.last and clip.utterance in self.utterances:
            self.utterances.remove(clip.utterance)
        self._wake.set()
        return clip

    def depths(self) -> tuple[int, int]:
        """(utterances held, clips waiting), for the metrics' snapshot."""
        return len(self.utterances), len(self.clips)

    async def _run(self) -> None:
        done: set[str] = set()
        while True:
            utterance = next((u for u in self.utterances if u.id not in done), None)
            if utterance is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            done.add(utterance.id)
            if len(done) > 4 * self.max_utterances:  # ids are never reused: forget old ones
                live = {u.id for u in self.utterances}
                done &= live
            await self._synthesise(utterance)

    async def _synthesise(self, utterance: Utterance) -> None:
        count = len(utterance.sentences)
        # Remote services answer in parallel: the next sentences are requested while the
        # first is spoken (bounded), so a slow service does not leave gaps between them.
        width = max(1, self._tts.parallel_sentences(utterance.language))
        ahead: deque[asyncio.Task[tuple[Speech, list[FrameAudio]]]] = deque()
        try:
            for i in range(count):
                while len(ahead) < width and i + len(ahead) < count:
                    sentence = utterance.sentences[i + len(ahead)]
                    ahead.append(asyncio.create_task(self._speak(sentence, utterance)))
                while len(self.clips) >= self.max_clips and utterance.generation == self.generation:
                    self._wake.clear()
                    await self._wake.wait()
                if utterance.generation != self.generation:
                    return
                t0 = time.perf_counter()
                try:
                    speech, frames = await ahead.popleft()
                except (TtsError, ValueError) as e:
                    self._failed(utterance, e)
                    return
                if utterance.generation != self.generation:
                    return  # interrupted while synthesising: the result is stale
                log.debug(
                    "session=%s utterance %s sentence %d/%d: %.2f s of speech, waited %.0f ms",
                    self.session_id,
                    utterance.id,
                    i + 1,
                    count,
                    speech.duration,
                    (time.perf_counter() - t0) * 1000,
                )
                timeline = PhonemeTimeline(speech.phonemes) if speech.phonemes else None
                self.clips.append(Clip(utterance, deque(frames), timeline, last=i == count - 1))
                self._on_clip()
        finally:
            for task in ahead:  # interrupted or failed: later sentences are not needed
                task.cancel()
            await asyncio.gather(*ahead, return_exceptions=True)

    async def _speak(self, sentence: str, utterance: Utterance) -> tuple[Speech, list[FrameAudio]]:
        speech = await asyncio.to_thread(
            self._tts.synthesize, sentence, utterance.language, utterance.options
        )
        frames = await asyncio.to_thread(sentence_frames, speech.pcm, self.lookahead_frames)
        return speech, frames

    def _failed(self, utterance: Utterance, error: Exception) -> None:
        log.warning("session=%s utterance %s: TTS failed: %s", self.session_id, utterance.id, error)
        if utterance.generation != self.generation:
            return
        utterance.error = f"speech synthesis failed: {error}"
        self._on_error(utterance, utterance.error)
        # An empty last clip ends the utterance through the pipeline, after any sentences
        # already queued and in order with other utterances, so that every accepted
        # utterance gets exactly one speaking_ended (with the error).
        self.clips.append(Clip(utterance, deque(), None, last=True))
        self._on_clip()
