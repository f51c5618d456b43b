"""Render jobs: /api/generate's work as a resource that can be followed and cancelled.

    POST   /api/jobs               the bodies /api/generate takes -> 202, Location, the job
    GET    /api/jobs/{id}          {id, status, frames_done, frames_total, elapsed_s, eta_s, ...}
    GET    /api/jobs/{id}/events   the same as Server-Sent Events: progress, then done/failed/
                                   cancelled, then the stream ends
    GET    /api/jobs/{id}/video    the MP4 once done (409 before, 410 failed or cancelled)
    DELETE /api/jobs/{id}          cancel a queued or running job; forget a finished one

Jobs take the same render slots as /api/generate (rtc/http/slots.py), so together they never
run more renders at once, nor keep more waiting, than the configuration allows. A cancelled
render stops at its next chunk and gives its slot back as its thread ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web

from inference.render import RenderStats
from rtc.http.errors import ApiError
from rtc.http.generate import INLINE_MP4, Generator, Render, body_source, call_soon
from rtc.http.metrics import Metrics
from rtc.http.sse import StateFeed, stream_feed
from rtc.live.events import sse_message

log = logging.getLogger(__name__)

FINISHED = ("done", "failed", "cancelled")
"""The statuses a job ends in (before them: queued, then running)."""
MAX_FINISHED = 32
"""Finished jobs kept; beyond that the oldest finished are forgotten, their MP4s deleted."""
KEEP_SECONDS = 600.0
"""Seconds a finished job (and its MP4) is kept."""
PROGRESS_INTERVAL = 0.2
"""Least seconds between two progress events of one stream (the last event comes at once)."""
CANCEL_WAIT = 10.0
"""Seconds DELETE waits for a running render to stop, so that its slot is free when it
answers; a render stops at its next chunk (TTS of a long text can take a moment more)."""


class _Cancelled(Exception):
    """Raised by a cancelled job's progress callback to stop its render."""


@dataclass(eq=False)
class RenderJob:
    """One job's state (what GET /api/jobs/{id} shows) and those who follow it."""

    id: str
    source: str
    """text or audio (the metrics' label)."""
    status: str = "queued"
    frames_done: int = 0
    frames_total: int | None = None
    error: str | None = None
    stats: RenderStats | None = None
    """The render's timings and length, once done."""
    created: float = field(default_factory=time.monotonic)
    frames_from: float | None = None
    """When the frames started (after TTS or decoding): the start of the frame rate."""
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    """Set to stop the render at its next chunk (read by the render thread)."""
    task: asyncio.Task[None] | None = None
    expiry: asyncio.TimerHandle | None = None
    feed: StateFeed = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.feed = StateFeed(self.describe)

    def describe(self) -> dict[str, Any]:
        """The job JSON (docs/api.md, "Render jobs")."""
        now = self.finished or time.monotonic()
        out: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "frames_done": self.frames_done,
            "frames_total": self.frames_total,
            "elapsed_s": round(now - self.created, 3),
            "eta_s": self._eta(now),
        }
        if self.status == "failed":
            out["error"] = self.error or "the render failed"
        if self.status == "done" and self.stats is not None:
            out["video"] = f"/api/jobs/{self.id}/video"
            out["duration_s"] = self.stats.duration
        return out

    def _eta(self, now: float) -> float | None:
        if self.status == "done":
            return 0.0
        if self.status != "running" or not self.frames_done or self.frames_from is None:
            return None  # no rate before the first chunk
        assert self.frames_total is not None
        seconds_per_frame = max(now - self.frames_from, 0.0) / self.frames_done
        return round((self.frames_total - self.frames_done) * seconds_per_frame, 3)

    def start(self) -> None:
        """The job got a render slot."""
        if self.status == "queued":
            self.status = "running"
            self.feed.changed()

    def progressed(self, done: int, total: int, at: float) -> None:
        """``done`` of ``total`` frames rendered (``at``: when, by the monotonic clock)."""
        if self.status != "running":
            return  # cancelled meanwhile: the render is stopping
        if self.frames_total is None:
            self.frames_from = at
        self.frames_done, self.frames_total = done, total
        self.feed.changed()

    def finish(self, status: str, error: str | None = None) -> bool:
        """End the job as ``status``; False if it had ended already (cancelled by DELETE)."""
        if self.status in FINISHED:
            return False
        self.status, self.error, self.finished = status, error, time.monotonic()
        if status == "done" and self.stats is not None:
            self.frames_done = self.frames_total = self.stats.frames
        self.feed.end()
        return True


def job_message(state: dict[str, Any]) -> bytes:
    """A job state as one SSE message: ``progress`` until the end, then its final status."""
    status = state["status"]
    return sse_message(state, status if status in FINISHED else "progress")


class RenderJobs:
    """The job store and its endpoints (see the module docstring).

    A finished job's MP4 stays in a temporary folder of this store, not in memory as
    /api/generate's answer does: up to 32 renders of minutes each would hold gigabytes, and
    a file can be served with Range requests, which a browser's <video> uses to seek.
    """

    def __init__(self, generator: Generator, metrics: Metrics) -> None:
        self._generator = generator
        self._metrics = metrics
        self.jobs: dict[str, RenderJob] = {}
        self.max_finished = MAX_FINISHED
        self.keep_seconds = KEEP_SECONDS
        self._folder: Path | None = None

    def folder(self) -> Path:
        """The store's folder of MP4s, made on first use (removed by :meth:`close`)."""
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="avatar-jobs-"))
        return self._folder

    def video_path(self, job: RenderJob) -> Path:
        return self.folder() / f"{job.id}.mp4"

    async def post(self, request: web.Request) -> web.Response:
        """POST /api/jobs: 202 with the queued job; the refusals of /api/generate."""
        render = await self._generator.admit(request)
        job = RenderJob(secrets.token_urlsafe(12), body_source(request))
        self.jobs[job.id] = job
        job.task = asyncio.get_running_loop().create_task(self._run(job, render))
        # A task cancelled before its first step never runs the code that ends its turn.
        job.task.add_done_callback(lambda _: render.turn.abandon())
        return web.json_response(
            job.describe(), status=202, headers={"Location": f"/api/jobs/{job.id}"}
        )

    async def _run(self, job: RenderJob, render: Render) -> None:
        loop = asyncio.get_running_loop()
        out = self.video_path(job)

        def progress(done: int, total: int) -> None:  # in the render thread
            if job.cancel.is_set():
                raise _Cancelled
            call_soon(loop, partial(job.progressed, done, total, time.monotonic()))

        def work() -> RenderStats:
            if job.cancel.is_set():
                raise _Cancelled
            return self._generator.render_file(render, out, progress)

        status, error = "failed", None
        try:
            job.stats = await self._generator.run(render, work, on_start=job.start)
            status = "done"
        except _Cancelled:
            status = "cancelled"
        except asyncio.CancelledError:  # cancelled while queued, or the app is closing
            status = "cancelled"
            raise
        except ApiError as e:  # TTS failure, full disk, text or audio that cannot be used
            error = e.message
        except Exception:
            log.exception("render job %s failed", job.id)
            error = "internal error; the server log has the details"
        finally:
            self._end(job, status, error)
            kept = job.id in self.jobs
            if job.status != "done" or not kept:  # partial, cancelled, or forgotten meanwhile
                with contextlib.suppress(OSError):
                    out.unlink(missing_ok=True)
            if kept and job.expiry is None:
                job.expiry = loop.call_later(self.keep_seconds, self._forget, job.id)
            self._prune()

    def _end(self, job: RenderJob, status: str, error: str | None = None) -> None:
        if job.finish(status, error):
            self._metrics.render_jobs.labels(job.source, status).inc()

    def _prune(self) -> None:
        """Forget the oldest finished jobs beyond :attr:`max_finished`."""
        finished = sorted(
            (job for job in self.jobs.values() if job.finished is not None),
            key=lambda job: job.finished or 0.0,
        )
        for job in finished[: max(0, len(finished) - self.max_finished)]:
            self._forget(job.id)

    def _forget(self, job_id: str) -> None:
        """Remove a job and its MP4 (a running render's file goes when it stops)."""
        job = self.jobs.pop(job_id, None)
        if job is None:
            return
        if job.expiry is not None:
            job.expiry.cancel()
        if job.status == "done":
            with contextlib.suppress(OSError):
                self.video_path(job).unlink(missing_ok=True)

    def _job(self, request: web.Request) -> RenderJob:
        job_id = request.match_info["id"]
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"no render job {job_id[:40]!r} (unknown, or forgotten)")
        return job

    async def status(self, request: web.Request) -> web.Response:
        """GET /api/jobs/{id}."""
        return web.json_response(self._job(request).describe())

    async def events(self, request: web.Request) -> web.StreamResponse:
        """GET /api/jobs/{id}/events: the job as SSE until it ends."""
        job = self._job(request)
        return await stream_feed(request, job.feed, job_message, PROGRESS_INTERVAL)

    async def video(self, request: web.Request) -> web.StreamResponse:
        """GET /api/jobs/{id}/video: the MP4 of a done job."""
        job = self._job(request)
        if job.status in ("failed", "cancelled"):
            raise ApiError(410, f"render job {job.id} {job.status}; it has no video")
        if job.status != "done" or job.stats is None:
            raise ApiError(
                409, f"render job {job.id} is {job.status}; its video is there once it is done"
            )
        headers = job.stats.headers() | INLINE_MP4 | {"Content-Type": "video/mp4"}
        return web.FileResponse(self.video_path(job), headers=headers)

    async def delete(self, request: web.Request) -> web.Response:
        """DELETE /api/jobs/{id}: cancel a queued or running job, forget a finished one."""
        job = self._job(request)
        if job.status in FINISHED:
            self._forget(job.id)
        elif job.task is not None:
            self._cancel(job)
            # Answer once the render has stopped, so the slot is free for the next request.
            await asyncio.wait({job.task}, timeout=CANCEL_WAIT)
        return web.Response(status=204)

    def _cancel(self, job: RenderJob) -> None:
        job.cancel.set()  # a running render stops at its next chunk
        if job.status == "queued":
            self._end(job, "cancelled")
            if job.task is not None:
                job.task.cancel()  # it waits for a slot: it never starts
        # A running job ends as cancelled when its thread has stopped (in _run), after its
        # slot is given back: whoever sees "cancelled" may start the next render at once.

    async def shutdown(self, _: web.Application | None = None) -> None:
        """Cancel every job and wait for the renders to stop (app.on_shutdown: the jobs'
        event streams end, so they do not hold the server's shutdown up)."""
        tasks = [job.task for job in self.jobs.values() if job.task is not None]
        for job in self.jobs.values():
            if job.status not in FINISHED:
                self._cancel(job)
        if tasks:
            await asyncio.wait(tasks, timeout=CANCEL_WAIT)

    async def close(self, app: web.Application | None = None) -> None:
        """Cancel every job, then remove them and their files (app.on_cleanup)."""
        await self.shutdown(app)
        for job in self.jobs.values():
            if job.expiry is not None:
                job.expiry.cancel()
        self.jobs.clear()
        if self._folder is not None:
            await asyncio.to_thread(shutil.rmtree, self._folder, ignore_errors=True)
            self._folder = None


JOBS_KEY = web.AppKey("render_jobs", RenderJobs)


def register_jobs(app: web.Application, generator: Generator, metrics: Metrics) -> RenderJobs:
    """Add the job routes; the jobs are cancelled on app shutdown and removed with their
    files on cleanup (register before the generator's own cleanup, which waits for the
    render threads)."""
    jobs = RenderJobs(generator, metrics)
    app[JOBS_KEY] = jobs
    router = app.router
    router.add_post("/api/jobs", jobs.post)
    router.add_get("/api/jobs/{id}", jobs.status)
    router.add_get("/api/jobs/{id}/events", jobs.events)
    router.add_get("/api/jobs/{id}/video", jobs.video)
    router.add_delete("/api/jobs/{id}", jobs.delete)
    app.on_shutdown.append(jobs.shutdown)
    app.on_cleanup.append(jobs.close)
    return jobs
