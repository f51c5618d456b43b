"""Render jobs (rtc/http/jobs.py) over a real loopback socket: a job renders what
/api/generate renders, reports its progress (JSON and Server-Sent Events), can be cancelled
queued or running (its slot is free at once), shares /api/generate's validation and render
slots, ends as failed with the reason, and is forgotten with its file when bounded out."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from inference.tts import TtsError
from rtc.http.app import build_app
from rtc.http.jobs import JOBS_KEY, RenderJobs
from rtc.services import Services
from tests.test_http_api import JSON_ERRORS, BrokenEngine, expect_mp4, upload

pytestmark = pytest.mark.timeout(120)

SHORT = {"text": "Привет! Как дела?", "language": "ru"}
MEDIUM = {"text": " ".join(["Мама мыла раму, а папа читал газету."] * 6), "language": "ru"}
"""About 15 s of speech: several render chunks of 64 frames."""
WAIT = 60.0
"""Seconds any one wait in these tests may take before it fails (never reached normally)."""


async def _client(services: Services) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(build_app(services), host="127.0.0.1")) as client:
        yield client


def _with_http(services: Services, **http: Any) -> Services:
    config = services.config
    return dataclasses.replace(
        services,
        config=dataclasses.replace(config, http=dataclasses.replace(config.http, **http)),
        engines={**services.engines, "broken": BrokenEngine()},
    )


@pytest.fixture
async def api(loaded_services: Services) -> AsyncIterator[TestClient]:
    async for client in _client(_with_http(loaded_services)):
        yield client


@pytest.fixture
async def single(loaded_services: Services) -> AsyncIterator[TestClient]:
    """One render at a time and one waiting: the slots are easy to fill."""
    services = _with_http(loaded_services, max_parallel_renders=1, max_waiting_renders=1)
    async for client in _client(services):
        yield client


def long_text(services: Services) -> dict[str, str]:
    """The longest text the server takes (about 110 s of speech, 40+ chunks)."""
    limit = services.config.tts.max_text_chars
    return {"text": ("Мама мыла раму, а папа читал газету. " * 100)[:limit], "language": "ru"}


async def post_job(client: TestClient, body: object = SHORT) -> dict[str, Any]:
    r = await client.post("/api/jobs", json=body)
    assert r.status == 202, await r.text()
    job = await r.json()
    assert r.headers["Location"] == f"/api/jobs/{job['id']}"
    return dict(job)


async def job_state(client: TestClient, job_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/jobs/{job_id}")
    assert r.status == 200, await r.text()
    return dict(await r.json())


async def events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event name, data) of an SSE response as they arrive; comments skipped."""
    kind = "message"
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            yield kind, json.loads(line[len("data: ") :])


async def all_events(client: TestClient, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every event of the job's stream, to its end."""
    r = await client.get(f"/api/jobs/{job_id}/events")
    assert r.status == 200 and r.content_type == "text/event-stream"
    async with asyncio.timeout(WAIT):
        return [item async for item in events(r)]


async def until_status(client: TestClient, job_id: str, *wanted: str) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        while (state := await job_state(client, job_id))["status"] not in wanted:
            await asyncio.sleep(0.02)
    return state


async def expect_error(r: aiohttp.ClientResponse, status: int, *needles: str) -> str:
    assert r.status == status, await r.text()
    body = await r.json()
    assert set(body) == {"error"}
    for needle in needles:
        assert needle in body["error"], body["error"]
    return str(body["error"])


# --- a job from start to video ----------------------------------------------------------


async def test_a_job_renders_what_generate_renders(api: TestClient, tmp_path: Path) -> None:
    job = await post_job(api, SHORT)
    assert job["status"] == "queued" and job["frames_done"] == 0
    assert job["frames_total"] is None and job["eta_s"] is None and job["elapsed_s"] >= 0
    assert "video" not in job and "error" not in job
    kind, final = (await all_events(api, job["id"]))[-1]
    assert kind == "done" and final["status"] == "done"
    assert final["video"] == f"/api/jobs/{job['id']}/video"
    assert final["frames_done"] == final["frames_total"] > 0 and final["eta_s"] == 0
    assert await job_state(api, job["id"]) | {"elapsed_s": 0} == final | {"elapsed_s": 0}

    r = await api.get(final["video"])
    assert r.headers["Content-Disposition"] == 'inline; filename="avatar.mp4"'
    (tmp_path / "job").mkdir()
    job_mp4, job_duration = await expect_mp4(r, tmp_path / "job")
    with av.open(str(tmp_path / "job" / "answer.mp4")) as container:
        assert container.streams.video and container.streams.audio
    generated, duration = await expect_mp4(await api.post("/api/generate", json=SHORT), tmp_path)
    assert job_duration == duration == final["duration_s"]
    assert len(job_mp4.frames) == len(generated.frames) == final["frames_total"]
    assert job_mp4.audio_duration == generated.audio_duration

    r = await api.get(final["video"], headers={"Range": "bytes=0-99"})  # how <video> seeks
    assert r.status == 206 and len(await r.read()) == 100
    metrics = await (await api.get("/metrics")).text()
    assert 'avatar_render_jobs_total{source="text",status="done"} 1.0' in metrics


async def test_progress_rises_to_the_total_over_server_sent_events(api: TestClient) -> None:
    job = await post_job(api, MEDIUM)
    received = await all_events(api, job["id"])
    kinds = [kind for kind, _ in received]
    assert kinds[-1] == "done" and set(kinds[:-1]) <= {"progress"}
    states = [state for _, state in received]
    order = ["queued", "running", "done"]
    ranks = [order.index(state["status"]) for state in states]
    assert ranks == sorted(ranks)
    done = [state["frames_done"] for state in states]
    assert done == sorted(done) and done[-1] == states[-1]["frames_total"] > 64
    for state in states:
        if state["status"] == "running" and state["frames_done"] > 0:
            assert state["frames_total"] == states[-1]["frames_total"]
            assert state["eta_s"] is not None and state["eta_s"] >= 0
    again = await all_events(api, job["id"])  # a finished job: its final state, then the end
    assert again == [("done", again[0][1])] and again[0][1]["status"] == "done"


# --- cancelling and the shared slots ------------------------------------------------------


async def test_cancelling_a_running_job_frees_its_slot_at_once(
    single: TestClient, loaded_services: Services
) -> None:
    job = await post_job(single, long_text(loaded_services))
    r = await single.get(f"/api/jobs/{job['id']}/events")
    stream = events(r)
    async with asyncio.timeout(WAIT):
        async for kind, state in stream:
            assert kind == "progress", state
            if state["frames_done"] > 0:
                break
    await expect_error(await single.get(f"/api/jobs/{job['id']}/video"), 409, "running")
    r = await single.delete(f"/api/jobs/{job['id']}")
    assert r.status == 204
    async with asyncio.timeout(WAIT):
        rest = [item async for item in stream]
    assert [kind for kind, _ in rest][-1:] == ["cancelled"]
    state = await job_state(single, job["id"])
    assert state["status"] == "cancelled" and state["frames_done"] < state["frames_total"]
    assert "video" not in state and "error" not in state and state["eta_s"] is None
    await expect_error(await single.get(f"/api/jobs/{job['id']}/video"), 410, "cancelled")
    # The render stopped before DELETE answered: the next job gets the slot at once.
    second = await post_job(single, SHORT)
    assert (await job_state(single, second["id"]))["status"] in ("running", "done")
    assert (await all_events(single, second["id"]))[-1][0] == "done"


async def test_queue_limit_and_a_queued_job_that_never_starts(
    single: TestClient, loaded_services: Services
) -> None:
    running = await post_job(single, long_text(loaded_services))
    await until_status(single, running["id"], "running")
    queued = await post_job(single, SHORT)
    assert (await job_state(single, queued["id"]))["status"] == "queued"
    for path in ("/api/jobs", "/api/generate"):  # one slot, one place: both are taken
        r = await single.post(path, json=SHORT)
        await expect_error(r, 503, "too many renders queued")
        assert int(r.headers["Retry-After"]) > 0
    await expect_error(await single.get(f"/api/jobs/{queued['id']}/video"), 409, "queued")

    assert (await single.delete(f"/api/jobs/{queued['id']}")).status == 204
    state = await job_state(single, queued["id"])
    assert state["status"] == "cancelled" and state["frames_total"] is None
    third = await post_job(single, SHORT)  # the cancelled job gave its place back
    assert (await single.delete(f"/api/jobs/{running['id']}")).status == 204
    assert (await all_events(single, third["id"]))[-1][0] == "done"
    assert (await job_state(single, queued["id"]))["frames_done"] == 0  # it never started

    jobs: RenderJobs = single.app[JOBS_KEY]
    assert (jobs.folder() / f"{third['id']}.mp4").exists()
    assert (await single.delete(f"/api/jobs/{third['id']}")).status == 204  # finished: forget
    await expect_error(await single.get(f"/api/jobs/{third['id']}"), 404)
    assert list(jobs.folder().iterdir()) == []  # neither the video nor the cancelled partial


# --- refusals and failures ---------------------------------------------------------------


async def test_unknown_ids_are_404(api: TestClient) -> None:
    for method, path in (
        ("GET", "/api/jobs/nope"),
        ("GET", "/api/jobs/nope/events"),
        ("GET", "/api/jobs/nope/video"),
        ("DELETE", "/api/jobs/nope"),
    ):
        await expect_error(await api.request(method, path), 404, "no render job 'nope'")


async def test_bad_bodies_are_refused_as_generate_refuses_them(api: TestClient) -> None:
    # Factories: a multipart body can be sent once only.
    requests: list[Callable[[], dict[str, Any]]] = [
        partial(dict, json=body) for _, body, _, _ in JSON_ERRORS
    ]
    requests += [
        partial(dict, data="Привет", headers={"Content-Type": "text/plain"}),
        partial(dict, data=b"{", headers={"Content-Type": "application/json"}),
        lambda: {"data": upload(None, language="ru")},
        lambda: {"data": upload(b"")},
    ]
    for request in requests:
        generated = await api.post("/api/generate", **request())
        queued = await api.post("/api/jobs", **request())
        assert 400 <= generated.status < 600 and queued.status == generated.status, request()
        assert await queued.json() == await generated.json()
    assert api.app[JOBS_KEY].jobs == {}


async def test_failures_end_the_job_as_failed_with_the_reason(
    api: TestClient, loaded_services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_tts(*_: object) -> None:
        raise TtsError("the voice service answered 500")

    def full_disk(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    garbage = np.random.default_rng(0).integers(0, 256, 5_000, dtype=np.uint8).tobytes()

    def tts_fails(patched: pytest.MonkeyPatch) -> None:
        patched.setattr(loaded_services.tts, "synthesize", broken_tts)

    def disk_full(patched: pytest.MonkeyPatch) -> None:
        patched.setattr("rtc.http.generate.render_to_mp4", full_disk)

    cases: list[tuple[dict[str, Any], Callable[[pytest.MonkeyPatch], None] | None, str]] = [
        ({"data": upload(garbage)}, None, "could not decode"),
        ({"json": SHORT | {"engine": "broken"}}, None, "internal error; the server log"),
        ({"json": SHORT}, tts_fails, "speech synthesis failed: the voice service answered 500"),
        ({"json": SHORT}, disk_full, "no disk space"),
    ]
    for request, patch, reason in cases:
        with monkeypatch.context() as patched:
            if patch is not None:
                patch(patched)
            r = await api.post("/api/jobs", **request)
            assert r.status == 202, await r.text()
            job_id = (await r.json())["id"]
            kind, state = (await all_events(api, job_id))[-1]
        assert kind == "failed" and state["status"] == "failed" and "video" not in state
        assert reason in state["error"] and "fell over" not in state["error"]
        await expect_error(await api.get(f"/api/jobs/{job_id}/video"), 410, "failed")
    assert list(api.app[JOBS_KEY].folder().iterdir()) == []


# --- bounds ------------------------------------------------------------------------------


async def test_finished_jobs_are_bounded_expire_and_go_with_the_app(
    loaded_services: Services,
) -> None:
    async with TestClient(TestServer(build_app(loaded_services), host="127.0.0.1")) as client:
        jobs: RenderJobs = client.app[JOBS_KEY]
        jobs.max_finished = 1
        first = await post_job(client, SHORT)
        await all_events(client, first["id"])
        second = await post_job(client, SHORT)
        await all_events(client, second["id"])
        await expect_error(await client.get(f"/api/jobs/{first['id']}"), 404)  # oldest went
        assert [p.stem for p in jobs.folder().iterdir()] == [second["id"]]

        jobs.keep_seconds = 0.05
        third = await post_job(client, SHORT)
        await all_events(client, third["id"])
        async with asyncio.timeout(WAIT):
            while (await client.get(f"/api/jobs/{third['id']}")).status != 404:
                await asyncio.sleep(0.02)
        assert not (jobs.folder() / f"{third['id']}.mp4").exists()
        folder = jobs.folder()
        kept = await post_job(client, long_text(loaded_services))  # still running at the end
        await until_status(client, kept["id"], "running")
    assert not folder.exists()  # the app's cleanup cancelled the job and removed the folder
    assert jobs.jobs == {}
