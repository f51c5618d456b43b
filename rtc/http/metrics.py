"""Prometheus metrics of one application, served at ``GET /metrics``.

Each application has its own :class:`prometheus_client.CollectorRegistry` (never the global
one), so tests can build many apps in one process. Things that happen once (a request, an
error) are counted where they happen; live state (sessions, their fps, skipped frames, queue
depths, the A/V offset estimate, batcher and engine counters) is read from the objects that
already keep it, at scrape time, so the realtime code carries no metrics calls: its error
events reach :meth:`Metrics.session_event` through the sessions' event listeners.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from inference.engines.serial import SerialEngine
from rtc.http.errors import Handler
from rtc.http.metrics_runtime import runtime_metrics
from rtc.http.metrics_streams import stream_families
from rtc.live.clock import AUDIO_PERIOD, VIDEO_PERIOD
from rtc.services import Services

if TYPE_CHECKING:
    from rtc.webrtc.session import Session
    from rtc.webrtc.signalling import Realtime

log = logging.getLogger(__name__)

GENERATE_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Upper bounds (seconds) of the /api/generate duration histogram."""
ERROR_KINDS = ("engine", "tts", "disk", "recording", "http_500", "session")
"""Kinds always exported (at 0 until they happen), so alerts can be written before a fault."""


class Metrics:
    """The registry of one application and the counters updated as things happen."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # process_resident_memory_bytes, process_open_fds, process_cpu_seconds_total ...:
        # with the task and thread counts below, what a leak hunt (bench/soak.py) reads.
        ProcessCollector(registry=self.registry)
        self.errors: Tally[str] = Tally({kind: 0 for kind in ERROR_KINDS})
        """Errors by the layer that saw them; exported by :class:`LiveCollector`."""
        self.http_responses = Counter(
            "avatar_http_responses",
            "HTTP answers by route template, method and status "
            "(limit refusals are the 413/429/503 ones)",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.generate_requests = Counter(
            "avatar_generate_requests",
            "POST /api/generate requests by input and outcome",
            ["source", "status"],
            registry=self.registry,
        )
        self.generate_seconds = Histogram(
            "avatar_generate_seconds",
            "Wall seconds of successful /api/generate requests, "
            "from the request to the finished MP4 (waiting for a render slot included)",
            buckets=GENERATE_BUCKETS,
            registry=self.registry,
        )
        self.generate_video_seconds = Counter(
            "avatar_generate_video_seconds",
            "Seconds of video rendered by /api/generate",
            registry=self.registry,
        )
        self.render_jobs = Counter(
            "avatar_render_jobs",
            "Render jobs (/api/jobs) by input and how they ended (done, failed, cancelled)",
            ["source", "status"],
            registry=self.registry,
        )
        self.publication_changes = Counter(
            "avatar_publication_state_changes",
            "Publications into Janus entering a state (connecting, live, retrying, failed, "
            "stopped)",
            ["state"],
            registry=self.registry,
        )

    def error(self, kind: str) -> None:
        """Count one error of ``kind`` (engine, tts, disk, http_500, session ...)."""
        self.errors[kind] += 1

    def session_event(self, event: dict[str, Any]) -> None:
        """A realtime session's event: its errors are counted (speech failures as tts, a
        recording that ran out of space as disk, another recording failure as recording)."""
        kind = event.get("type")
        if kind == "error":
            message = str(event.get("message", ""))
            self.error("tts" if message.startswith("speech synthesis") else "session")
        elif kind == "recording_error":
            self.error("disk" if event.get("cause") == "disk" else "recording")
        elif kind == "publication_state":
            self.publication_changes.labels(str(event.get("state", ""))).inc()

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)


METRICS_KEY = web.AppKey("metrics", Metrics)


class LiveCollector(Collector):
    """Reads sessions, batchers and engines when Prometheus scrapes."""

    def __init__(
        self,
        metrics: Metrics,
        services: Services,
        realtime: Realtime | None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._services = services
        self._realtime = realtime
        self._now = now
        self._last_sent: dict[str, tuple[float, int]] = {}
        """Per session: (scrape time, video frames sent), for fps between two scrapes."""

    def collect(self) -> Iterator[Metric]:
        """Every live metric (called by the registry on each scrape)."""
        errors = CounterMetricFamily(
            "avatar_errors",
            "Errors by the layer that saw them: "
            "engine (an engine call raised), tts, disk (no space), "
            "recording (a recording failed otherwise), http_500 "
            "(an answer 500), session (a realtime session "
            "reported an error)",
            labels=["kind"],
        )
        counts = self._metrics.errors.copy()
        # Engine calls are counted by the engines themselves (both /api/generate and the
        # realtime batcher go through them), so that kind is read from there.
        counts["engine"] += sum(
            engine.stats.failures
            for engine in self._services.engines.values()
            if isinstance(engine, SerialEngine)
        )
        for kind, count in sorted(counts.items()):
            errors.add_metric([kind], count)
        yield errors
        yield from runtime_metrics()
        yield from self._engines()
        realtime = self._realtime
        if realtime is not None:
            yield from self._sessions(realtime)
            yield from self._batchers(realtime)

    def _engines(self) -> Iterator[Metric]:
        sizes = HistogramMetricFamily(
            "avatar_inference_batch_size", "Frames per engine call", labels=["engine"]
        )
        seconds = HistogramMetricFamily(
            "avatar_inference_seconds", "Seconds per engine call", labels=["engine"]
        )
        failures = CounterMetricFamily(
            "avatar_inference_failures", "Engine calls that raised", labels=["engine"]
        )
        for name, engine in self._services.engines.items():
            if not isinstance(engine, SerialEngine):
                continue  # only the server's wrapped engines keep counters
            stats = engine.stats
            sizes.add_metric([name], stats.batch_sizes.cumulative(), stats.batch_sizes.total)
            seconds.add_metric([name], stats.seconds.cumulative(), stats.seconds.total)
            failures.add_metric([name], stats.failures)
        yield from (sizes, seconds, failures)

    def _sessions(self, realtime: Realtime) -> Iterator[Metric]:
        sessions = list(realtime.sessions.values())
        yield GaugeMetricFamily("avatar_sessions", "Live realtime sessions", value=len(sessions))
        yield GaugeMetricFamily(
            "avatar_sessions_limit",
            "Most realtime sessions allowed",
            value=realtime.live.max_sessions,
        )
        labels = ["session", "engine"]
        fps = GaugeMetricFamily(
            "avatar_session_fps",
            "Video frames sent per second since the "
            "previous scrape (the session's average at its first)",
            labels=labels,
        )
        sent = CounterMetricFamily(
            "avatar_session_frames_sent",
            "Frames sent by a session's tracks",
            labels=[*labels, "track"],
        )
        skipped = CounterMetricFamily(
            "avatar_session_frames_skipped",
            "Slots a track passed over because it was called late (encoder or loop behind)",
            labels=[*labels, "track"],
        )
        missing = CounterMetricFamily(
            "avatar_session_frames_missing",
            "Slots with nothing queued: video repeats the last picture, audio sends silence",
            labels=[*labels, "track"],
        )
        late = CounterMetricFamily(
            "avatar_session_pictures_late",
            "Pictures that came back from the engine after their slot, or expired before it",
            labels=labels,
        )
        depth = GaugeMetricFamily(
            "avatar_session_queue_depth",
            "Items waiting in a session's queues",
            labels=[*labels, "queue"],
        )
        offset = GaugeMetricFamily(
            "avatar_session_av_offset_seconds",
            "Media time the audio "
            "track has sent minus the video track's (> 0: video "
            "behind); both are released by one clock, so this "
            "shows a track falling behind, not the content's sync",
            labels=labels,
        )
        now = self._now()
        for session in sessions:
            key = [session.id, session.engine]
            video, audio = session.video.stats, session.audio.stats
            for track, stats in (("video", video), ("audio", audio)):
                sent.add_metric([*key, track], stats.sent)
                skipped.add_metric([*key, track], stats.skipped)
                missing.add_metric([*key, track], stats.missing)
            fps.add_metric(key, self._fps(session, now))
            pipeline = session.pipeline
            late.add_metric(key, pipeline.stats.late + pipeline.stats.expired)
            for queue, size in _queue_depths(session):
                depth.add_metric([*key, queue], size)
            estimate = av_offset(session)
            if estimate is not None:
                offset.add_metric(key, estimate)
        self._last_sent = {s.id: (now, s.video.stats.sent) for s in sessions}
        yield from (fps, sent, skipped, missing, late, depth, offset)
        yield from stream_families(realtime.streams)

    def _fps(self, session: Session, now: float) -> float:
        previous = self._last_sent.get(session.id)
        sent = session.video.stats.sent
        if previous is not None and now > previous[0]:
            return (sent - previous[1]) / (now - previous[0])
        first = session.video.stats.first_slot
        if first is None:
            return 0.0
        elapsed = session.clock.now() - session.clock.video_time(first)
        return sent / elapsed if elapsed > 0 else 0.0

    def _batchers(self, realtime: Realtime) -> Iterator[Metric]:
        labels = ["engine"]
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "batches": CounterMetricFamily(
                "avatar_batcher_batches",
                "Batches inferred by the shared realtime batcher",
                labels=labels,
            ),
            "frames": CounterMetricFamily(
                "avatar_batcher_frames",
                "Frames inferred by the shared realtime batcher",
                labels=labels,
            ),
            "expired": CounterMetricFamily(
                "avatar_batcher_expired",
                "Frames dropped because their slot passed before inference",
                labels=labels,
            ),
            "flushed": CounterMetricFamily(
                "avatar_batcher_flushed",
                "Frames dropped by interruptions and closed sessions",
                labels=labels,
            ),
            "busy": CounterMetricFamily(
                "avatar_batcher_busy_seconds",
                "Seconds the batcher spent in the engine and compositor",
                labels=labels,
            ),
            "latency": GaugeMetricFamily(
                "avatar_batcher_latency_seconds",
                "Smoothed seconds from submit to result",
                labels=labels,
            ),
        }
        for engine, stats in realtime.batchers.describe().items():
            for key, family in families.items():
                family.add_metric([engine], float(stats.get(key, 0)))
        yield from families.values()


def _queue_depths(session: Session) -> Iterable[tuple[str, int]]:
    return session.pipeline.depths().items()


def av_offset(session: Session) -> float | None:
    """Seconds of media the audio track has released minus the video track's, or None before
    both have sent a frame. A track's position is one past its last slot: ``first_slot +
    sent + skipped`` (skipped slots advance the position without sending)."""
    video, audio = session.video.stats, session.audio.stats
    if video.first_slot is None or audio.first_slot is None:
        return None
    video_end = (video.first_slot + video.sent + video.skipped) * VIDEO_PERIOD
    audio_end = (audio.first_slot + audio.sent + audio.skipped) * AUDIO_PERIOD
    return audio_end - video_end


def metrics_middleware(metrics: Metrics) -> Middleware:
    """Counts every answer by route template, method and status (outermost middleware)."""

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        try:
            response = await handler(request)
        except web.HTTPException as e:  # redirects and anything error_middleware passed on
            metrics.http_responses.labels(route, request.method, str(e.status)).inc()
            raise
        metrics.http_responses.labels(route, request.method, str(response.status)).inc()
        if response.status == 500:
            metrics.error("http_500")
        return response

    return count


async def metrics_handler(request: web.Request) -> web.Response:
    """GET /metrics: the Prometheus text format."""
    body = request.app[METRICS_KEY].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def install_metrics(
    app: web.Application, metrics: Metrics, services: Services, realtime: Realtime | None
) -> None:
    """Register the live collector and the /metrics route of ``app``."""
    app[METRICS_KEY] = metrics
    metrics.registry.register(LiveCollector(metrics, services, realtime))
    if realtime is not None:
        realtime.event_listeners.append(metrics.session_event)
    app.router.add_get("/metrics", metrics_handler)
