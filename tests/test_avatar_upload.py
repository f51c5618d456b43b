"""Avatars uploaded over HTTP (rtc/http/avatars.py): prepared without a restart, used at
once, deleted again; every bad upload refused with its reason and nothing left on disk."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import struct
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from config import PROJECT_ROOT
from inference.avatar.store import AvatarStore
from rtc.http.app import SERVICES_KEY, build_app
from rtc.services import Services
from tests.media import encode_video

pytestmark = pytest.mark.timeout(120)

ASTRONAUT = PROJECT_ROOT / "avatars" / "astronaut.jpg"


@pytest.fixture
async def client(loaded_services: Services, tmp_path: Path) -> AsyncIterator[TestClient]:
    folder = tmp_path / "avatars"
    folder.mkdir()
    shutil.copy(ASTRONAUT, folder / "astronaut.jpg")
    config = dataclasses.replace(
        loaded_services.config,
        avatars=dataclasses.replace(
            loaded_services.config.avatars,
            avatars_dir=folder,
            uploads_dir=None,  # the default: avatars/uploaded, here inside tmp_path
            max_upload_seconds=3.0,
        ),
    )
    store = AvatarStore.load(folder, config.avatars.cache_dir, "astronaut")
    services = dataclasses.replace(loaded_services, config=config, avatars=store)
    async with TestClient(TestServer(build_app(services), host="127.0.0.1")) as c:
        yield c


def form(name: str, filename: str, data: bytes, **fields: str) -> aiohttp.FormData:
    body = aiohttp.FormData()
    body.add_field("name", name)
    body.add_field("file", data, filename=filename)
    for key, value in fields.items():
        body.add_field(key, value)
    return body


async def upload(client: TestClient, name: str, filename: str, data: bytes) -> dict[str, Any]:
    """POST then poll to the end; the final state."""
    resp = await client.post("/api/avatars", data=form(name, filename, data))
    assert resp.status == 202, await resp.text()
    state = await resp.json()
    assert state == {"name": name, "status": "preparing", "progress": 0.0}
    deadline = time.monotonic() + 60
    while state["status"] == "preparing":
        assert time.monotonic() < deadline, state
        await asyncio.sleep(0.1)
        state = await (await client.get(f"/api/avatars/{name}")).json()
    return dict(state)


def jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def png_bomb(side: int = 50_000) -> bytes:
    """A 10 KB PNG declaring side x side pixels (inflates to gigabytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * (10 * 1024 * 1024), 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


async def test_upload_use_preview_and_delete(client: TestClient, tmp_path: Path) -> None:
    state = await upload(client, "me", "me.jpg", ASTRONAUT.read_bytes())
    assert state == {"name": "me", "status": "ready", "progress": 1.0}
    listed = await (await client.get("/api/avatars")).json()
    assert "me" in [a["name"] for a in listed["avatars"]]
    preview = await client.get("/api/avatars/me/preview")
    assert preview.status == 200 and preview.content_type == "image/jpeg"
    picture = cv2.imdecode(np.frombuffer(await preview.read(), np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None and picture.shape[:2] == (512, 512)
    resp = await client.post("/api/generate", json={"text": "Привет.", "avatar": "me"})
    assert resp.status == 200 and resp.content_type == "video/mp4"
    folder = Path(client.app[SERVICES_KEY].config.avatars.avatars_dir) / "uploaded"
    assert [p.name for p in folder.glob("me.*")] == ["me.png"]  # our own rewrite, not theirs
    assert (await client.delete("/api/avatars/me")).status == 204
    assert (await client.get("/api/avatars/me")).status == 404
    assert list(folder.glob("me.*")) == []
    assert (await client.delete("/api/avatars/astronaut")).status == 403


async def test_a_video_loop_and_its_length_limit(client: TestClient, tmp_path: Path) -> None:
    source = cv2.imread(str(ASTRONAUT))
    assert source is not None
    photo = cv2.resize(source, (384, 384))
    frames = [np.roll(photo, k % 3, axis=1) for k in range(50)]  # 2 s
    short = encode_video(tmp_path / "loop.mp4", frames).read_bytes()
    state = await upload(client, "loop", "loop.mp4", short)
    assert state["status"] == "ready", state
    avatars = {a["name"]: a for a in (await (await client.get("/api/avatars")).json())["avatars"]}
    assert avatars["loop"]["frames"] == 50
    long = encode_video(tmp_path / "long.mp4", frames * 3).read_bytes()  # 6 s > 3 s
    state = await upload(client, "long", "long.mp4", long)
    assert state["status"] == "failed" and "longer than 3 s" in state["error"]


async def test_bad_uploads_are_refused_with_the_reason(client: TestClient) -> None:
    photo = cv2.imread(str(ASTRONAUT))
    assert photo is not None
    two = np.hstack([photo, photo])
    small = cv2.resize(photo, (160, 160))
    gray = np.full((400, 400, 3), 128, np.uint8)
    failed = {
        "blank": (jpeg(gray), "no face found"),
        "pair": (jpeg(two), "faces found; upload a picture of one face"),
        "tiny": (jpeg(small), "too small"),
        "junk": (b"\xff\xd8 this is not a jpeg" * 50, "does not decode"),
        "bomb": (png_bomb(), "megapixels"),
    }
    for name, (data, reason) in failed.items():
        suffix = ".png" if name == "bomb" else ".jpg"
        began = time.monotonic()
        state = await upload(client, name, name + suffix, data)
        assert state["status"] == "failed" and reason in state["error"], (name, state)
        assert time.monotonic() - began < 30, name  # never a hang
        assert (await client.get(f"/api/avatars/{name}/preview")).status == 404
    refused = [
        (form("astronaut", "a.jpg", ASTRONAUT.read_bytes()), 409, "exists already"),
        (form("Bad Name!", "a.jpg", ASTRONAUT.read_bytes()), 400, "'name' must be"),
        (form("doc", "a.pdf", b"%PDF-1.4"), 400, "'file' must be one of"),
        (form("empty", "a.jpg", b""), 400, "non-empty 'file'"),
        (form("huge", "a.jpg", b"\xff" * (51 * 1024 * 1024)), 413, "limit"),
    ]
    for body, status, message in refused:
        resp = await client.post("/api/avatars", data=body)
        assert resp.status == status and message in (await resp.json())["error"], status
    # Nothing half-written stays: no staging folders, no files of failed uploads.
    folder = Path(client.app[SERVICES_KEY].config.avatars.avatars_dir) / "uploaded"
    assert sorted(p.name for p in folder.iterdir()) == [".staging"]
    assert list((folder / ".staging").iterdir()) == []


async def test_progress_as_server_sent_events(client: TestClient) -> None:
    body = form("watched", "w.jpg", ASTRONAUT.read_bytes())
    resp = await client.post("/api/avatars", data=body)
    assert resp.status == 202
    events = await client.get("/api/avatars/watched/events")
    text = await asyncio.wait_for(events.text(), 60)
    states = [line for line in text.splitlines() if line.startswith("data:")]
    assert states and '"status": "ready"' in states[-1], states
    assert len(states) >= 2  # progress before the end
