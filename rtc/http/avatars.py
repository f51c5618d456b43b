"""Avatars added over HTTP, usable at once without a restart.

    POST   /api/avatars                   multipart file + name (+ teeth) -> 202 preparing
    GET    /api/avatars/{name}            {name, status, progress, error?}
    GET    /api/avatars/{name}/events     the same as Server-Sent Events until ready/failed
    GET    /api/avatars/{name}/preview    its first frame with the detected face box (JPEG)
    DELETE /api/avatars/{name}            204; the shipped avatars answer 403

The upload is written to a staging folder, checked and rewritten in a child process
(inference/avatar/upload_check.py: one face, large enough, no image bomb, decoders of
strangers' files kept out of the server), then moved into ``avatars/uploaded/`` and prepared
like a shipped avatar. Whatever fails, nothing half-written stays: the staging folder goes,
and a file moved in is removed again if its preparation fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
from aiohttp import web

from inference.avatar.store import UPLOADED, Avatar, load_avatar
from inference.isolated_decode import PROJECT_ROOT
from rtc.http.errors import ApiError
from rtc.http.multipart import read_upload
from rtc.http.sse import StateFeed, stream_feed
from rtc.live.events import sse_message
from rtc.services import Services

log = logging.getLogger(__name__)

AVATAR_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
"""Uploaded avatar names: lower-case slugs (they name files and appear in URLs)."""
SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".mp4", ".webm", ".mov"}
CHECK_TIMEOUT = 120.0
"""Seconds the child may take to check and rewrite one upload."""


@dataclass
class UploadJob:
    """One upload being prepared: its state, and who listens for changes."""

    name: str
    status: str = "preparing"
    progress: float = 0.0
    error: str | None = None
    feed: StateFeed = field(init=False, repr=False)
    """What GET /api/avatars/{name}/events streams."""

    def __post_init__(self) -> None:
        self.feed = StateFeed(self.describe)
        if self.status != "preparing":
            self.feed.end()

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "status": self.status, "progress": self.progress}
        if self.error is not None:
            out["error"] = self.error
        return out

    def update(self, status: str, progress: float, error: str | None = None) -> None:
        self.status, self.progress, self.error = status, round(progress, 2), error
        if status == "preparing":
            self.feed.changed()
        else:
            self.feed.end()


class AvatarUploads:
    """The avatar endpoints (see the module docstring)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        config = services.config.avatars
        self.folder = Path(config.uploads_dir or Path(config.avatars_dir) / UPLOADED)
        self.cache = Path(config.cache_dir)
        self.max_bytes = config.max_upload_bytes
        self.max_seconds = config.max_upload_seconds
        self.jobs: dict[str, UploadJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def post(self, request: web.Request) -> web.Response:
        """POST /api/avatars: 202, preparation under way."""
        if request.content_type != "multipart/form-data":
            raise ApiError(415, "send multipart/form-data with a 'file' and a 'name'")
        upload = await read_upload(request, "file", self.max_bytes, "name, teeth")
        name = upload.fields.get("name", "").strip()
        if not AVATAR_NAME.fullmatch(name):
            raise ApiError(400, "'name' must be 1-40 lower-case letters, digits, '-' or '_'")
        if name in self.services.avatars.names() or self._busy(name):
            raise ApiError(409, f"an avatar called {name!r} exists already; choose another name")
        if not upload.file:
            raise ApiError(400, "the upload needs a non-empty 'file' (an image or a video)")
        suffix = Path(upload.filename or "").suffix.lower()
        if suffix not in SUFFIXES:
            raise ApiError(400, f"'file' must be one of {', '.join(sorted(SUFFIXES))}")
        teeth = upload.fields.get("teeth", "true").strip().lower() not in ("0", "false", "no")
        stage = self.folder / ".staging" / f"{name}-{secrets.token_hex(4)}"
        stage.mkdir(parents=True)
        (stage / f"source{suffix}").write_bytes(upload.file)
        job = self.jobs[name] = UploadJob(name)
        task = asyncio.get_running_loop().create_task(self._prepare(job, stage, suffix, teeth))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response(job.describe(), status=202)

    def _busy(self, name: str) -> bool:
        job = self.jobs.get(name)
        return job is not None and job.status == "preparing"

    async def _prepare(self, job: UploadJob, stage: Path, suffix: str, teeth: bool) -> None:
        moved: list[Path] = []
        try:
            checked = await self._check(job, stage / f"source{suffix}", stage)
            made = stage / str(checked["file"])
            final = self.folder / f"{job.name}{made.suffix}"
            os.replace(made, final)
            moved.append(final)
            if not teeth:
                sidecar = final.with_suffix(".json")
                sidecar.write_text(json.dumps({"teeth": False}))
                moved.append(sidecar)
            job.update("preparing", 0.95)
            avatar: Avatar = await asyncio.to_thread(load_avatar, final, self.cache)
            self.services.avatars.add(avatar)
            job.update("ready", 1.0)
            log.info("avatar %s uploaded: %d frame(s)", job.name, len(avatar.frames))
        except (ValueError, OSError) as e:
            for path in moved:
                with contextlib.suppress(OSError):
                    path.unlink()
            job.update("failed", job.progress, str(e))
            log.warning("avatar upload %s failed: %s", job.name, e)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
            if job.status == "preparing":  # an unexpected error: end the event streams too
                why = "the avatar could not be prepared; the server log has the details"
                job.update("failed", job.progress, why)

    async def _check(self, job: UploadJob, source: Path, stage: Path) -> dict[str, Any]:
        env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "inference.avatar.upload_check",
            str(source), str(stage), repr(self.max_seconds),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
        )  # fmt: skip
        assert child.stdout is not None
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                while line := (await child.stdout.readline()).decode("utf-8", "replace"):
                    if line.startswith("P "):
                        job.update("preparing", float(line[2:]))
                    elif line.startswith("OK "):
                        return dict(json.loads(line[3:]))
                    elif line.startswith("ER "):
                        raise ValueError(line[3:].strip())
                await child.wait()
        except TimeoutError:
            raise ValueError(f"checking the upload took more than {CHECK_TIMEOUT:g} s") from None
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        raise ValueError(
            f"the upload could not be read (the checker ended with {child.returncode})"
        )

    def _job(self, name: str) -> UploadJob:
        job = self.jobs.get(name)
        if job is not None:
            return job
        if name in self.services.avatars.names():
            return UploadJob(name, "ready", 1.0)
        raise ApiError(404, f"no avatar called {name!r}")

    async def status(self, request: web.Request) -> web.Response:
        """GET /api/avatars/{name}."""
        return web.json_response(self._job(request.match_info["name"]).describe())

    async def events(self, request: web.Request) -> web.StreamResponse:
        """GET /api/avatars/{name}/events: progress as SSE until ready or failed."""
        job = self._job(request.match_info["name"])
        return await stream_feed(
            request, job.feed, lambda state: sse_message({"type": "avatar", **state})
        )

    async def preview(self, request: web.Request) -> web.Response:
        """GET /api/avatars/{name}/preview[?box=0]: the first frame with its face box drawn
        (``box=0``: without it, the still the live pages show before a session starts)."""
        try:
            avatar = self.services.avatars.get(request.match_info["name"])
        except ValueError as e:
            raise ApiError(404, str(e)) from None
        first = avatar.frames[0]
        image = first.image.copy()
        box = first.box
        if request.query.get("box") != "0":
            cv2.rectangle(image, (box.x1, box.y1), (box.x2, box.y2), (60, 220, 90), 2)
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise ApiError(500, "the preview could not be encoded")
        return web.Response(body=jpeg.tobytes(), content_type="image/jpeg")

    async def delete(self, request: web.Request) -> web.Response:
        """DELETE /api/avatars/{name}: 204; 403 for a shipped avatar."""
        name = request.match_info["name"]
        store = self.services.avatars
        if name not in store.names():
            raise ApiError(404, f"no avatar called {name!r}")
        if name not in store.uploaded:
            raise ApiError(403, f"avatar {name!r} ships with the server and cannot be deleted")
        if name == store.default:
            raise ApiError(409, f"avatar {name!r} is the default; start with another default")
        store.remove(name)
        self.jobs.pop(name, None)
        for path in self.folder.glob(f"{name}.*"):
            with contextlib.suppress(OSError):
                path.unlink()
        return web.Response(status=204)


def register_avatars(app: web.Application, services: Services) -> AvatarUploads:
    """Add the avatar upload routes."""
    uploads = AvatarUploads(services)
    router = app.router
    router.add_post("/api/avatars", uploads.post)
    router.add_get("/api/avatars/{name}", uploads.status)
    router.add_get("/api/avatars/{name}/events", uploads.events)
    router.add_get("/api/avatars/{name}/preview", uploads.preview)
    router.add_delete("/api/avatars/{name}", uploads.delete)
    return uploads
