"""The models and data the server loads once at start-up and shares with every request.

Engines are wrapped so calls into one engine are serialised (some backends keep one infer
request and are not re-entrant); different engines run in parallel.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

from config import AppConfig
from inference.avatar.store import AvatarStore
from inference.engines.base import EngineUnavailable, LipSyncEngine, create_engine
from inference.frames import FacePatch, LipSyncRequest
from inference.tts import Language, TextToSpeech, create_tts

log = logging.getLogger(__name__)

SHIPPED_ENGINES = ("wav2lip-gan", "wav2lip-nogan", "viseme")
"""Engines the server tries to load at start-up, in order of preference."""


BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
"""Upper bounds of the batch-size histogram (frames per ``infer`` call)."""
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds (seconds) of the ``infer`` duration histogram."""


class Buckets:
    """A fixed-bucket histogram that engines keep without depending on a metrics library.

    The HTTP layer reads it at scrape time (rtc/http/metrics.py); counts only ever grow.
    """

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is >= it."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs as Prometheus wants them, ``+Inf`` last."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


@dataclass
class InferStats:
    """What one engine did: batch sizes, time per call and failures (all cumulative)."""

    batch_sizes: Buckets = field(default_factory=lambda: Buckets(BATCH_BUCKETS))
    seconds: Buckets = field(default_factory=lambda: Buckets(LATENCY_BUCKETS))
    failures: int = 0

    def snapshot(self) -> InferStats:
        """A copy that a reader can use while the engine keeps counting."""
        copy = InferStats(failures=self.failures)
        for mine, theirs in ((copy.batch_sizes, self.batch_sizes), (copy.seconds, self.seconds)):
            mine.counts, mine.total = list(theirs.counts), theirs.total
        return copy


class SerialEngine(LipSyncEngine):
    """Wraps an engine so only one thread runs ``infer`` on it at a time, and counts calls."""

    def __init__(self, inner: LipSyncEngine) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]  # mirrors the wrapped engine's name
        self.device = inner.device
        self.backend = inner.backend
        self.max_batch = inner.max_batch
        self._lock = threading.Lock()
        # Separate from _lock so a metrics scrape never waits for a running batch.
        self._stats_lock = threading.Lock()
        self._stats = InferStats()

    @property
    def stats(self) -> InferStats:
        """A consistent copy of the counters (batch sizes, seconds per call, failures)."""
        with self._stats_lock:
            return self._stats.snapshot()

    def infer(self, requests: Sequence[LipSyncRequest]) -> list[FacePatch]:
        """Run the wrapped engine under this engine's lock."""
        with self._lock:
            t0 = time.perf_counter()
            try:
                patches = self.inner.infer(requests)
            except Exception:
                with self._stats_lock:
                    self._stats.failures += 1
                raise
            elapsed = time.perf_counter() - t0
        with self._stats_lock:
            self._stats.batch_sizes.observe(len(requests))
            self._stats.seconds.observe(elapsed)
        return patches

    def warmup(self) -> None:
        """Warm the wrapped engine up."""
        with self._lock:
            self.inner.warmup()

    def describe(self) -> dict[str, object]:
        """The wrapped engine's description."""
        return self.inner.describe()


def _speakable(ch: str) -> bool:
    """Letters, digits, marks, punctuation, symbols: not separators (Z*), controls, format
    characters such as zero-width spaces and joiners, or unassigned code points (C*)."""
    return unicodedata.category(ch)[0] not in "CZ"


@dataclass
class Services:
    """Everything loaded at start-up: engines, TTS, avatars."""

    config: AppConfig
    tts: TextToSpeech
    avatars: AvatarStore
    engines: dict[str, LipSyncEngine] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    """Engines that could not load, with the reason (shown by the API and pages)."""
    default_engine: str = "viseme"
    languages: list[Language] = field(default_factory=list)

    @classmethod
    def load(cls, config: AppConfig, engine_names: Sequence[str] = SHIPPED_ENGINES) -> Services:
        """Load TTS, avatars and every engine that can run here; log what runs where."""
        tts = create_tts()
        avatars = AvatarStore.load(
            config.avatars.avatars_dir, config.avatars.cache_dir, config.avatars.default_avatar
        )
        services = cls(config=config, tts=tts, avatars=avatars, languages=tts.languages())
        for name in engine_names:
            services.try_load(name)
        wanted = config.engines.default_engine
        if wanted is not None:
            if wanted not in services.engines:
                reason = services.unavailable.get(wanted, "unknown engine")
                raise EngineUnavailable(f"default engine {wanted!r} cannot run: {reason}")
            services.default_engine = wanted
        else:
            services.default_engine = next(
                (n for n in ("wav2lip-gan", "viseme") if n in services.engines),
                next(iter(services.engines), "viseme"),
            )
        log.info("default engine: %s", services.default_engine)
        return services

    def try_load(self, name: str) -> None:
        """Load and warm up one engine; record why when it cannot run."""
        try:
            engine = create_engine(name, config=self.config.engines)
            engine.warmup()
        except (EngineUnavailable, ValueError, RuntimeError, OSError) as e:
            self.unavailable[name] = str(e)
            log.warning("engine %s unavailable: %s", name, e)
            return
        self.engines[name] = SerialEngine(engine)
        log.info("engine %s ready: device=%s backend=%s", name, engine.device, engine.backend)

    def engine(self, name: str | None) -> LipSyncEngine:
        """The engine called ``name`` (default for None).

        Raises ValueError for an unknown name and EngineUnavailable (with the reason) for a
        known engine that cannot run here.
        """
        key = name or self.default_engine
        if key in self.engines:
            return self.engines[key]
        if key in self.unavailable:
            raise EngineUnavailable(self.unavailable[key])
        known = ", ".join(sorted(set(self.engines) | set(self.unavailable)))
        raise ValueError(f"unknown engine {key!r}; known engines: {known}")

    def language(self, code: str | None) -> str:
        """Validated language code (default for None); ValueError lists some known ones."""
        key = (code or self.config.tts.default_language).strip()
        return self.tts.check_request("x", key)

    def check_text(self, text: object) -> str:
        """The text stripped, or ValueError saying what is wrong with it."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("'text' must be a non-empty string")
        limit = self.config.tts.max_text_chars
        if len(text) > limit:
            raise ValueError(f"text is {len(text)} characters; the limit is {limit}")
        if "\x00" in text:
            # Checked here, not only in the TTS: a realtime 'say' must fail at once, not later.
            raise ValueError("text contains a NUL character; remove it")
        if not any(_speakable(ch) for ch in text):
            raise ValueError(
                "'text' has nothing to speak: only spaces, control or zero-width characters"
            )
        return text.strip()

    def describe_engines(self) -> list[dict[str, object]]:
        """Every engine with its state, for /api/engines."""
        out: list[dict[str, object]] = [
            engine.describe()
            | {"name": name, "available": True, "default": name == self.default_engine}
            for name, engine in self.engines.items()
        ]
        out += [
            {"name": name, "available": False, "error": why}
            for name, why in self.unavailable.items()
        ]
        return out
