"""Scenarios against a real Janus, run inside a network namespace (tests/test_janus.py).

    unshare -n python -m tests.janus_scenarios SCENARIO OUT.json

Janus (libnice) never gathers candidates on a loopback interface, so these run where the
test made everything itself: a fresh network namespace with ``lo`` up and a veth pair,
``198.18.0.1/24`` on ``v0`` (a benchmarking range, reachable from nowhere). Janus
(deploy/janus/test), the avatar server and the aiortc clients all run inside it; Janus's
and the server's HTTP APIs stay on 127.0.0.1. Each scenario writes what it measured as JSON;
the pytest side asserts on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from config import PROJECT_ROOT
from rtc.outputs.janus import JanusSession
from rtc.webrtc.ice import rtc_configuration
from tests.realtime_peer import Received, TestClient, audio_envelope, mouth_activity
from tests.server_process import server_process

JANUS_CONFIG = PROJECT_ROOT / "deploy" / "janus" / "test"
JANUS_URL = "http://127.0.0.1:8088/janus"
ADDRESS = "198.18.0.1"
TEXT = "Папа купил большую карту мира. Мама мыла раму, а мы смотрели на море."


def make_network() -> None:
    """lo up and the veth pair with 198.18.0.1 (we are root in a fresh namespace)."""
    for command in (
        "ip link set lo up",
        "ip link add v0 type veth peer name v1",
        f"ip addr add {ADDRESS}/24 dev v0",
        "ip link set v0 up",
        "ip link set v1 up",
    ):
        subprocess.run(command.split(), check=True)


@contextlib.contextmanager
def janus(log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Janus with the test configuration, answering ``info`` before this yields."""
    process = start_janus(log)
    try:
        yield process
    finally:
        stop_janus(process)


def second_janus_config(folder: Path) -> Path:
    """The test configuration for a second Janus: HTTP on 8089, its own RTP ports."""
    folder.mkdir(parents=True, exist_ok=True)
    for source in JANUS_CONFIG.glob("*.jcfg"):
        text = source.read_text()
        text = text.replace("port = 8088", "port = 8089").replace(
            "ws_port = 8188", "ws_port = 8189"
        )
        text = text.replace('"20000-20999"', '"21000-21999"')
        (folder / source.name).write_text(text)
    return folder


def start_janus(
    log: Path, config: Path = JANUS_CONFIG, url: str = JANUS_URL
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            ["janus", "-C", str(config / "janus.jcfg"), "-F", str(config), "-o"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=config,
        )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            import urllib.request

            body = json.dumps({"janus": "info", "transaction": "t"}).encode()
            with urllib.request.urlopen(url, body, timeout=1) as resp:
                if json.loads(resp.read()).get("janus") == "server_info":
                    return process
        assert process.poll() is None, log.read_text()[-2000:]
        time.sleep(0.1)
    raise AssertionError("Janus did not start: " + log.read_text()[-2000:])


def stop_janus(process: subprocess.Popen[bytes], kill: bool = False) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class Subscriber:
    """An aiortc viewer of one room feed, through Janus's own API."""

    def __init__(self, http: aiohttp.ClientSession, url: str = JANUS_URL) -> None:
        self.janus = JanusSession(http, url)
        self.pc = RTCPeerConnection(rtc_configuration([]))
        self.received = Received()
        self._tasks: list[asyncio.Task[None]] = []

    async def watch(self, room: int, feed: int) -> None:
        await self.janus.create()
        handle = await self.janus.attach("janus.plugin.videoroom")
        join = {"request": "join", "ptype": "subscriber", "room": room, "streams": [{"feed": feed}]}
        _, offer = await self.janus.message(handle, join)
        assert offer is not None and offer["type"] == "offer", offer

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.create_task(self._record(track)))

        await self.pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        answer = {"type": "answer", "sdp": self.pc.localDescription.sdp}
        await self.janus.message(handle, {"request": "start"}, jsep=answer)
        await self.janus.trickle_completed(handle)

    async def _record(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if isinstance(frame, av.VideoFrame):
                    image = frame.to_ndarray(format="yuv420p")[: frame.height]
                    h, w = image.shape
                    self.received.video_times.append(now)
                    self.received.mouth.append(image[h // 2 :, w // 4 : 3 * w // 4].copy())
                elif isinstance(frame, av.AudioFrame):
                    data = frame.to_ndarray().astype(np.float32) / 32768.0
                    self.received.audio_times.append(now)
                    self.received.audio.append(data.reshape(-1, len(frame.layout.channels)).mean(1))

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.janus.destroy()


async def publishers(
    http: aiohttp.ClientSession, room: int, url: str = JANUS_URL
) -> list[dict[str, Any]]:
    """The room's publishers, as Janus lists them."""
    session = JanusSession(http, url)
    await session.create()
    try:
        handle = await session.attach("janus.plugin.videoroom")
        data = await session.request(handle, {"request": "listparticipants", "room": room})
        return [p for p in data.get("participants", []) if p.get("publisher")]
    finally:
        await session.destroy()


async def create_room(http: aiohttp.ClientSession, room: int, settings: dict[str, Any]) -> None:
    session = JanusSession(http, JANUS_URL)
    await session.create()
    try:
        handle = await session.attach("janus.plugin.videoroom")
        await session.request(handle, {"request": "create", "room": room, **settings})
    finally:
        await session.destroy()


async def destroy_room(http: aiohttp.ClientSession, room: int, secret: str | None) -> None:
    session = JanusSession(http, JANUS_URL)
    await session.create()
    try:
        handle = await session.attach("janus.plugin.videoroom")
        body: dict[str, Any] = {"request": "destroy", "room": room}
        if secret is not None:
            body["secret"] = secret
        await session.request(handle, body)
    finally:
        await session.destroy()


async def api(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, Any]:
    async with http.request(method, url, json=body) as resp:
        return resp.status, await resp.json(content_type=None)


async def wait_state(
    http: aiohttp.ClientSession, url: str, states: tuple[str, ...], seconds: float
) -> tuple[str, float]:
    """Poll a publication until its state is one of ``states``; (state, seconds waited)."""
    began = time.monotonic()
    state = ""
    while time.monotonic() - began < seconds:
        _, body = await api(http, "GET", url)
        state = body.get("state", "")
        if state in states:
            break
        await asyncio.sleep(0.1)
    return state, time.monotonic() - began


async def metric(http: aiohttp.ClientSession, base: str, name: str) -> float:
    async with http.get(base + "/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.split()[-1])
    return float("nan")


def fps_of(times: list[float], since: float, until: float) -> float:
    inside = [t for t in times if since <= t < until]
    return len(inside) / max(1e-6, until - since)


async def scenario_publish(tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with (
        janus(tmp / "janus.log") as janus_process,
        # A still head: the mouth's activity is measured in a fixed box (head sway would
        # move the whole face through it and drown the mouth).
        server_process(
            tmp / "server.log", tmp / "cache", None, "--no-idle-motion", loopback_ice=False
        ) as server,
    ):
        base = server.base
        async with aiohttp.ClientSession() as http:
            controller = TestClient(base)
            await controller.connect(avatar="astronaut", language="ru")
            await controller.wait_for_frames(10)
            threads0 = await metric(http, base, "avatar_os_threads")
            target = {"kind": "janus", "url": JANUS_URL, "room": 1234, "display": "avatar"}
            status, body = await api(
                http, "POST", f"{base}/api/streams/{controller.stream}/publish", target
            )
            out["post_status"], out["post_body"] = status, body
            if status != 201:
                return out
            location = f"{base}/api/publications/{body['id']}"
            out["live_after"] = (await wait_state(http, location, ("live",), 15))[1]
            (publisher,) = await publishers(http, 1234)
            out["feed_listed"] = publisher["id"] == (await api(http, "GET", location))[1]["feed"]
            subscriber = Subscriber(http)
            await subscriber.watch(1234, publisher["id"])
            await asyncio.sleep(1.5)
            status, _ = await controller.post("/say", {"text": TEXT})
            t0 = time.monotonic()
            await asyncio.sleep(6.0)
            received = subscriber.received
            out["subscriber_fps"] = fps_of(received.video_times, t0, t0 + 5.5)
            out["subscriber_audio_frames"] = len(received.audio)
            activity = mouth_activity(received)
            envelope = audio_envelope(received)
            out["mouth_moved"] = float(activity.max() / (np.median(activity[:5]) + 1))
            out["voice"] = float(envelope.max())
            # Mouth and voice together: the correlation of activity with the envelope, both
            # resampled on the arrival clock.
            grid = np.arange(t0, t0 + 6.0, 0.04)
            mouth = np.interp(grid, received.video_times, activity)
            voice = np.interp(grid, received.audio_times, envelope)
            out["mouth_voice_corr"] = float(np.corrcoef(mouth, voice)[0, 1])
            await subscriber.close()
            # Janus dies mid-stream and comes back.
            frames_before = len(controller.received.video_times)
            killed = time.monotonic()
            stop_janus(janus_process, kill=True)
            out["state_after_kill"], out["retrying_after"] = await wait_state(
                http, location, ("retrying",), 15
            )
            await asyncio.sleep(2.0)
            janus_process = start_janus(tmp / "janus.log")
            back = time.monotonic()
            state, out["live_again_after"] = await wait_state(http, location, ("live",), 20)
            out["state_after_restart"] = state
            await asyncio.sleep(1.0)
            times = controller.received.video_times
            during = [t for t in times if t >= killed - 0.5]
            out["session_max_gap"] = float(np.max(np.diff(during))) if len(during) > 1 else 99.0
            out["session_frames_during_outage"] = len(times) - frames_before
            out["outage_seconds"] = time.monotonic() - killed
            _, out["after_restart"] = await api(http, "GET", location)
            out["janus_back_to_live"] = out["live_again_after"]
            del back
            # DELETE leaves the room and frees what the publication held.
            status, _ = await api(http, "DELETE", location)
            out["delete_status"] = status
            out["publishers_after_delete"] = len(await publishers(http, 1234))
            out["get_after_delete"] = (await api(http, "GET", location))[0]
            _, streams = await api(http, "GET", base + "/api/streams")
            out["receivers_after_delete"] = streams["streams"][0]["encoders"][0]["receivers"]
            # Publish and delete again: what a publication holds comes back each time.
            held = []
            for _ in range(3):
                status, body = await api(
                    http, "POST", f"{base}/api/streams/{controller.stream}/publish", target
                )
                assert status == 201, body
                url = f"{base}/api/publications/{body['id']}"
                await wait_state(http, url, ("live",), 15)
                await api(http, "DELETE", url)
                await asyncio.sleep(1.0)
                held.append(
                    {
                        name: await metric(http, base, name)
                        for name in (
                            "avatar_os_threads",
                            "process_open_fds",
                            "avatar_asyncio_tasks",
                        )
                    }
                )
            out["held_after_cycles"] = held
            out["changes_to_retrying"] = await metric(
                http, base, 'avatar_publication_state_changes_total{state="retrying"}'
            )
            out["threads_before"] = threads0
            await controller.close()
        stop_janus(janus_process)
    return out


async def scenario_bad_input(tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with (
        janus(tmp / "janus.log"),
        server_process(tmp / "server.log", tmp / "cache", None, loopback_ice=False) as server,
    ):
        base = server.base
        async with aiohttp.ClientSession() as http:
            controller = TestClient(base)
            await controller.connect()
            publish = f"{base}/api/streams/{controller.stream}/publish"
            cases: dict[str, dict[str, Any]] = {
                "unreachable": {"url": "http://127.0.0.1:9/janus", "room": 1234},
                "not_janus": {"url": base + "/api/engines", "room": 1234},
                "no_room": {"url": JANUS_URL, "room": 987654},
                "create_pinned": {
                    "url": JANUS_URL,
                    "room": 4321,
                    "pin": "1111",
                    "create_room": True,
                },
                "wrong_pin": {"url": JANUS_URL, "room": 4321, "pin": "2222"},
                "bad_kind": {"kind": "mediasoup", "url": JANUS_URL, "room": 1},
                "room_not_int": {"url": JANUS_URL, "room": "1234"},
                "no_stream": {"url": JANUS_URL, "room": 1234},
            }
            for name, case in cases.items():
                body = {"kind": "janus", **case}
                url = publish if name != "no_stream" else f"{base}/api/streams/nope/publish"
                began = time.monotonic()
                status, reply = await api(http, "POST", url, body)
                out[name] = {"status": status, "reply": reply, "seconds": time.monotonic() - began}
            # The room is destroyed under a live publication: with create_room it comes back
            # (the room is made again); without, it fails with the reason.
            pinned = out["create_pinned"]["reply"]
            recreating = f"{base}/api/publications/{pinned['id']}"
            await wait_state(http, recreating, ("live",), 15)
            status, plain = await api(
                http, "POST", publish, {"kind": "janus", "url": JANUS_URL, "room": 1234}
            )
            fixed = f"{base}/api/publications/{plain['id']}"
            await wait_state(http, fixed, ("live",), 15)
            await destroy_room(http, 4321, None)
            await destroy_room(http, 1234, "adminpwd")
            out["recreated"] = await wait_state(http, recreating, ("live",), 20)
            out["recreated_retries"] = (await api(http, "GET", recreating))[1]["retries"]
            out["room_gone"] = await wait_state(http, fixed, ("failed",), 20)
            out["room_gone_reason"] = (await api(http, "GET", fixed))[1]["reason"]
            # An H.264 room: Janus picks H.264 from the offer (packetization-mode=1, the
            # constrained baseline profile the encoder makes), the stream adds that encoder.
            await create_room(http, 2468, {"videocodec": "h264", "h264_profile": "42e01f"})
            status, h264 = await api(
                http, "POST", publish, {"kind": "janus", "url": JANUS_URL, "room": 2468}
            )
            out["h264_status"] = status
            if status == 201:
                url = f"{base}/api/publications/{h264['id']}"
                out["h264_live"] = (await wait_state(http, url, ("live",), 15))[0]
                _, streams = await api(http, "GET", base + "/api/streams")
                out["h264_encoders"] = sorted(e["codec"] for e in streams["streams"][0]["encoders"])
                (publisher,) = await publishers(http, 2468)
                out["h264_watch"] = await watch_feed(http, JANUS_URL, 2468, publisher["id"], 3.0)
            await controller.close()
    return out


async def scenario_always_on(tmp: Path) -> dict[str, Any]:
    """``serve --publish`` started before Janus: the always-on stream goes live once Janus is
    up, speaks what /api/sessions/{id}/say sends, and subscribers see it."""
    out: dict[str, Any] = {}
    flag = f"janus:{JANUS_URL}#room=1234&display=always-on"
    with server_process(
        tmp / "server.log", tmp / "cache", None, "--publish", flag, loopback_ice=False
    ) as server:
        base = server.base
        async with aiohttp.ClientSession() as http:
            _, listed = await api(http, "GET", base + "/api/publications")
            (first,) = listed["publications"]
            out["state_without_janus"] = first["state"]
            location = f"{base}/api/publications/{first['id']}"
            with janus(tmp / "janus.log"):
                out["live"] = await wait_state(http, location, ("live",), 20)
                _, streams = await api(http, "GET", base + "/api/streams")
                (stream,) = streams["streams"]
                out["stream"] = stream["stream"]
                (publisher,) = await publishers(http, 1234)
                out["display"] = publisher.get("display")
                subscriber = Subscriber(http)
                await subscriber.watch(1234, publisher["id"])
                await asyncio.sleep(1.0)
                status, _ = await api(
                    http, "POST", f"{base}/api/sessions/{stream['session_id']}/say", {"text": TEXT}
                )
                out["say_status"] = status
                t0 = time.monotonic()
                await asyncio.sleep(4.0)
                out["subscriber_fps"] = fps_of(subscriber.received.video_times, t0, t0 + 3.5)
                out["voice"] = float(audio_envelope(subscriber.received).max())
                await subscriber.close()
    return out


async def watch_feed(
    http: aiohttp.ClientSession, url: str, room: int, feed: int, seconds: float
) -> dict[str, float]:
    """What a subscriber of one feed gets in ``seconds``: video fps and voice level."""
    subscriber = Subscriber(http, url)
    await subscriber.watch(room, feed)
    await asyncio.sleep(1.0)
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    received = subscriber.received
    result = {
        "fps": fps_of(received.video_times, t0, t0 + seconds),
        "audio_frames": float(len([t for t in received.audio_times if t >= t0])),
    }
    await subscriber.close()
    return result


async def scenario_scale_out(tmp: Path) -> dict[str, Any]:
    """Two avatar servers publish into one Janus; the first is cascaded to a second Janus,
    whose subscribers get it as one of its own publishers."""
    out: dict[str, Any] = {}
    second_url = "http://127.0.0.1:8089/janus"
    with (
        janus(tmp / "janus-a.log"),
        contextlib.closing(
            _Closer(start_janus(tmp / "janus-b.log", second_janus_config(tmp / "b"), second_url))
        ),
        server_process(tmp / "s1.log", tmp / "c1", None, loopback_ice=False) as one,
        server_process(tmp / "s2.log", tmp / "c2", None, loopback_ice=False) as two,
    ):
        async with aiohttp.ClientSession() as http:
            ids = []
            for name, server, extra in (
                ("one", one, {"secret": "adminpwd", "relays": [{"url": second_url, "room": 5678}]}),
                ("two", two, {}),
            ):
                client = TestClient(server.base)
                await client.connect()
                target = {"kind": "janus", "url": JANUS_URL, "room": 1234, "display": name}
                status, body = await api(
                    http,
                    "POST",
                    f"{server.base}/api/streams/{client.stream}/publish",
                    target | extra,
                )
                assert status == 201, body
                ids.append((server.base, body["id"], client))
            for base, pid, _ in ids:
                out.setdefault("live", []).append(
                    (await wait_state(http, f"{base}/api/publications/{pid}", ("live",), 15))[0]
                )
            listed = await publishers(http, 1234)
            out["displays_a"] = sorted(p.get("display", "") for p in listed)
            for p in listed:
                out[f"a_{p['display']}"] = await watch_feed(http, JANUS_URL, 1234, p["id"], 3.0)
            remote = await publishers(http, 5678, second_url)
            out["displays_b"] = [p.get("display", "") for p in remote]
            if remote:
                out["b_one"] = await watch_feed(http, second_url, 5678, remote[0]["id"], 3.0)
            _, described = await api(http, "GET", f"{ids[0][0]}/api/publications/{ids[0][1]}")
            out["relays"] = described["relays"]
            # Deleting the first publication removes its remote publisher too.
            await api(http, "DELETE", f"{ids[0][0]}/api/publications/{ids[0][1]}")
            out["b_after_delete"] = len(await publishers(http, 5678, second_url))
            for _, _, client in ids:
                await client.close()
    return out


class _Closer:
    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    def close(self) -> None:
        stop_janus(self.process)


async def scenario_whep_through_janus(tmp: Path) -> dict[str, Any]:
    """deploy/janus/whep: a standard WHEP client plays the published avatar from Janus."""
    out: dict[str, Any] = {}
    whep_dir = PROJECT_ROOT / "deploy" / "janus" / "whep"
    with (
        janus(tmp / "janus.log"),
        server_process(tmp / "server.log", tmp / "cache", None, loopback_ice=False) as server,
    ):
        async with aiohttp.ClientSession() as http:
            client = TestClient(server.base)
            await client.connect()
            target = {
                "kind": "janus",
                "url": JANUS_URL,
                "room": 1234,
                "feed": 4242,
                "secret": "adminpwd",
            }
            status, body = await api(
                http, "POST", f"{server.base}/api/streams/{client.stream}/publish", target
            )
            assert status == 201, body
            await wait_state(http, f"{server.base}/api/publications/{body['id']}", ("live",), 15)
            with (tmp / "whep.log").open("wb") as log:
                bridge = subprocess.Popen(
                    [
                        "node",
                        "whep-server.mjs",
                        "--janus",
                        "ws://127.0.0.1:8188",
                        "--room",
                        "1234",
                        "--feed",
                        "4242",
                        "--secret",
                        "adminpwd",
                        "--port",
                        "7090",
                    ],
                    cwd=whep_dir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            try:
                url = "http://127.0.0.1:7090/whep/endpoint/avatar"
                for _ in range(100):  # the bridge is up when the endpoint exists (bounded)
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(url) as resp:
                            if resp.status == 405:
                                break
                    await asyncio.sleep(0.1)
                player = RTCPeerConnection(rtc_configuration([]))
                player.addTransceiver("video", direction="recvonly")
                player.addTransceiver("audio", direction="recvonly")
                received = Received()
                readers: list[asyncio.Future[None]] = []

                @player.on("track")
                def on_track(track: MediaStreamTrack) -> None:
                    async def read() -> None:
                        with contextlib.suppress(MediaStreamError):
                            while True:
                                frame = await track.recv()
                                if isinstance(frame, av.VideoFrame):
                                    received.video_times.append(time.monotonic())
                                else:
                                    received.audio_times.append(time.monotonic())

                    readers.append(asyncio.ensure_future(read()))

                await player.setLocalDescription(await player.createOffer())
                async with http.post(
                    url,
                    data=player.localDescription.sdp,
                    headers={"Content-Type": "application/sdp"},
                ) as resp:
                    out["whep_status"] = resp.status
                    out["whep_type"] = resp.headers.get("Content-Type", "")
                    answer = await resp.text()
                out["answer_setup"] = sorted(set(re.findall(r"a=setup:(\w+)", answer)))
                # Janus 1.1.2's Streaming plugin answers a client offer with a=setup:actpass
                # (an answer must say active or passive); it then takes the DTLS client role.
                answer = answer.replace("a=setup:actpass", "a=setup:active")
                asked = time.monotonic()
                await player.setRemoteDescription(RTCSessionDescription(answer, "answer"))
                for _ in range(120):  # its first picture (bounded: 12 s)
                    if received.video_times:
                        break
                    await asyncio.sleep(0.1)
                out["first_frame_after"] = (
                    received.video_times[0] - asked if received.video_times else None
                )
                t0 = time.monotonic()
                await asyncio.sleep(4.0)
                out["fps"] = fps_of(received.video_times, t0, t0 + 4.0)
                out["audio_frames"] = len([t for t in received.audio_times if t >= t0])
                await player.close()
            finally:
                bridge.terminate()
                bridge.wait(10)
            await client.close()
    return out


SCENARIOS = {
    "whep_through_janus": scenario_whep_through_janus,
    "scale_out": scenario_scale_out,
    "publish": scenario_publish,
    "bad_input": scenario_bad_input,
    "always_on": scenario_always_on,
}


def main() -> None:
    name, out = sys.argv[1], Path(sys.argv[2])
    if os.geteuid() != 0:
        raise SystemExit("run as root inside `unshare -n`")
    make_network()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = asyncio.run(SCENARIOS[name](Path(tmp)))
        except BaseException as e:
            logs = {p.name: p.read_text(errors="replace")[-3000:] for p in Path(tmp).glob("*.log")}
            result = {"error": f"{type(e).__name__}: {e}", "logs": logs}
        out.write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
