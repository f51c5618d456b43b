"""WHEP over real loopback WebRTC: an aiortc player watches a stream another client controls.

The player sees the session's own frames (no second model run), in lip sync, and every WHEP
status code and header the draft asks for is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

import aiohttp
import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from config import AppConfig
from inference.avatar.store import AvatarStore
from inference.frames import Box
from inference.tts import TextToSpeech
from rtc.outputs.streams import STREAM_NAME
from rtc.outputs.whep import ice_server_links, preferred_video_codecs
from rtc.webrtc.ice import rtc_configuration
from rtc.webrtc.signalling import REALTIME_KEY
from tests.realtime_peer import (
    FOLLOWS_VOICE,
    STILL_HEAD,
    Received,
    TestClient,
    audio_envelope,
    cross_correlation_lag,
    mouth_activity,
    realtime_services,
    running_server,
    viewer_timelines,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("loopback_ice")]

TEXT = "Папа купил большую карту мира. Мама мыла раму."
SDP = "application/sdp"


class WhepPlayer:
    """A WHEP client: recvonly video + audio, the offer POSTed as application/sdp."""

    def __init__(self, mouth_box: Box | None = None) -> None:
        self.pc = RTCPeerConnection(rtc_configuration([]))
        self.mouth_box = mouth_box
        self.received = Received()
        self.location: str | None = None
        self.codec: str | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def offer(self) -> str:
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            record = self._video if track.kind == "video" else self._audio
            self._tasks.append(asyncio.create_task(record(track)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
        self.codec = _first_video_codec(sdp)

    async def _video(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.VideoFrame)
                image = frame.to_ndarray(format="yuv420p")[: frame.height]
                box = self.mouth_box
                crop = image if box is None else image[box.y1 : box.y2, box.x1 : box.x2]
                self.received.video_times.append(time.monotonic())
                self.received.video_pts.append(int(frame.pts or 0))
                self.received.mouth.append(crop.copy())

    async def _audio(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                data = frame.to_ndarray().astype(np.float32) / 32768.0
                mono = data.reshape(-1, len(frame.layout.channels)).mean(axis=1)
                self.received.audio_times.append(time.monotonic())
                self.received.audio_pts.append(int(frame.pts or 0))
                self.received.audio.append(mono)

    async def wait_for_frames(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received.video_times) < count:
            assert time.monotonic() < deadline, "no video reached the WHEP player"
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _first_video_codec(sdp: str) -> str | None:
    """The first codec of the answer's video m-line (the one the sender encodes with)."""
    lines = sdp.replace("\r\n", "\n").split("\n")
    for i, line in enumerate(lines):
        if line.startswith("m=video"):
            first_pt = line.split()[3]
            for rest in lines[i + 1 :]:
                if rest.startswith(f"a=rtpmap:{first_pt} "):
                    return rest.split()[1].split("/")[0]
    return None


async def test_whep_player_receives_the_controlled_stream_in_sync(
    app_config: AppConfig, avatar_store: AvatarStore, espeak_tts: TextToSpeech
) -> None:
    services = realtime_services(
        app_config, avatar_store, espeak_tts, max_viewers_per_stream=1, **STILL_HEAD
    )
    box = avatar_store.get("astronaut").frames[0].box
    async with running_server(services) as (url, app), aiohttp.ClientSession() as http:
        controller = TestClient(url)
        player = WhepPlayer(mouth_box=box)
        try:
            answer = await controller.connect(avatar="astronaut", language="ru")
            # A default name of its own: a shared viewer link must not carry the handle
            # that controls the session.
            assert answer["stream"] != answer["session_id"]
            assert STREAM_NAME.fullmatch(answer["stream"])
            stream = answer["stream"]
            offer = await player.offer()
            async with http.post(
                f"{url}/whep/{stream}", data=offer, headers={"Content-Type": SDP}
            ) as resp:
                assert resp.status == 201, await resp.text()
                # Exactly (RFC 9725): strict players compare it literally, no charset.
                assert resp.headers["Content-Type"] == SDP
                location = resp.headers["Location"]
                assert location.startswith(f"/whep/{stream}/")
                await player.answer(await resp.text())
            assert player.codec == "VP8"  # the server prefers VP8 for WHEP answers
            # A second viewer is over this server's limit of one.
            second = await WhepPlayer().offer()
            async with http.post(
                f"{url}/whep/{stream}", data=second, headers={"Content-Type": SDP}
            ) as resp:
                assert resp.status == 503 and "Retry-After" in resp.headers
            async with http.get(f"{url}/api/streams") as resp:
                listed = (await resp.json())["streams"]
            assert [s["stream"] for s in listed] == [stream]
            assert len(listed[0]["viewers"]) == 1

            await player.wait_for_frames(10)
            await asyncio.wait_for(controller.channel_open.wait(), 10)
            controller.channel.send(json.dumps({"type": "say", "text": TEXT}))
            await controller.wait_event("speaking_started")
            await controller.wait_event("speaking_ended", timeout=30)
            await player.wait_for_frames(len(player.received.video_times) + 12)
            realtime = app[REALTIME_KEY]
            session = realtime.sessions[controller.session_id]
            viewer = next(iter(realtime.streams.get(stream).viewers.values()))
            assert viewer.video.receiver is not None and viewer.audio.receiver is not None
            video_slot = viewer.video.receiver.first_slot
            audio_slot = viewer.audio.receiver.first_slot
            counters = {
                **viewer.describe(),
                "session_video": vars(session.video.stats).copy(),
                "session_audio": vars(session.audio.stats).copy(),
            }
            session_video_sent = session.video.stats.sent

            async with http.delete(url + location) as resp:
                assert resp.status == 200
            async with http.delete(url + location) as resp:
                assert resp.status == 404
            assert realtime.streams.get(stream).viewers == {}
        finally:
            await player.close()
            await controller.close()
        # The session ended: so did its stream.
        assert app[REALTIME_KEY].streams.get(stream) is None

    received = player.received
    assert session_video_sent >= len(received.video_times)  # one model run, shared packets
    steps = np.diff(received.video_pts)
    assert (steps > 0).all() and (steps % 3600 == 0).all(), steps  # whole slots, in order
    tv, ta = viewer_timelines(received, video_slot or 0, audio_slot or 0)
    envelope = audio_envelope(received)
    activity = mouth_activity(received)
    speech = ta[envelope > 0.02]
    assert speech.size > 25, "no speech reached the WHEP player"
    assert activity.max() > 5 * (np.median(activity[:5]) + 1)  # the mouth moved
    lag, corr = cross_correlation_lag(tv, activity, ta, envelope, speech[0] - 0.3, speech[-1] + 0.3)
    skipped = int(counters["session_audio"]["skipped"])
    if skipped:
        # The session's own audio track skipped slots (its event loop stalled for > 200 ms on
        # an overloaded machine). aiortc's Opus encoder ignores pts, so the received audio
        # timeline is shortened by the gap for every receiver alike, and a pts-based content
        # measurement is meaningless; everything else above was still checked.
        pytest.skip(f"machine overloaded: the session skipped {skipped} audio slots")
    assert corr > FOLLOWS_VOICE and abs(lag) <= 0.040, (lag, corr, counters)


async def test_whep_status_codes_and_headers(
    app_config: AppConfig, avatar_store: AvatarStore, espeak_tts: TextToSpeech
) -> None:
    services = realtime_services(app_config, avatar_store, espeak_tts, token="s3cret")
    auth = {"Authorization": "Bearer s3cret"}
    async with running_server(services) as (url, _), aiohttp.ClientSession() as http:
        # Preflight and discovery need no token.
        async with http.options(f"{url}/whep/anything") as resp:
            assert resp.status == 204
            assert resp.headers["Accept-Post"] == SDP
            assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        async with http.post(
            f"{url}/whep/anything", data="v=0", headers={"Content-Type": SDP}
        ) as resp:
            assert resp.status == 401
        async with http.post(
            f"{url}/whep/anything",
            data="v=0",
            headers={"Content-Type": SDP, "Authorization": "Bearer no"},
        ) as r:
            assert r.status == 401
        async with http.post(
            f"{url}/whep/anything", data="{}", headers={"Content-Type": "application/json", **auth}
        ) as resp:
            assert resp.status == 415
            assert resp.headers["Accept-Post"] == SDP
        offer = await WhepPlayer().offer()
        async with http.post(
            f"{url}/whep/nobody", data=offer, headers={"Content-Type": SDP, **auth}
        ) as resp:
            assert resp.status == 404
            assert "error" in await resp.json()
        async with http.patch(
            f"{url}/whep/nobody/v1",
            data="a=x",
            headers={"Content-Type": "application/trickle-ice-sdpfrag", **auth},
        ) as resp:
            assert resp.status == 405
            patch_allow = resp.headers["Allow"]
        # OPTIONS on a viewer says what its 405 says (PATCH is answered, with 405).
        async with http.options(f"{url}/whep/nobody/v1") as resp:
            assert resp.status == 204 and resp.headers["Allow"] == patch_allow
            assert "PATCH" not in patch_allow and "DELETE" in patch_allow
        async with http.delete(f"{url}/whep/nobody/v1", headers=auth) as resp:
            assert resp.status == 404
        async with http.get(f"{url}/obs/some-stream") as resp:
            assert resp.status == 200 and resp.content_type == "text/html"


def test_ice_server_links_and_codec_preference() -> None:
    links = ice_server_links(
        ("stun:stun.example.org:3478", "turn:user:pa%20ss@turn.example.org:3478")
    )
    assert links[0] == '<stun:stun.example.org:3478>; rel="ice-server"'
    assert links[1].startswith('<turn:turn.example.org:3478>; rel="ice-server"')
    assert 'username="user"' in links[1] and 'credential="pa ss"' in links[1]
    assert preferred_video_codecs()[0].mimeType == "video/VP8"
    assert preferred_video_codecs("video/H264")[0].mimeType == "video/H264"


async def test_viewer_that_never_connects_frees_its_slot(
    app_config: AppConfig,
    avatar_store: AvatarStore,
    espeak_tts: TextToSpeech,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A player that takes the answer and never does ICE loses its viewer slot after the
    connect timeout instead of holding it for aioice's ~64 s."""
    timeout = 1.0
    services = realtime_services(
        app_config,
        avatar_store,
        espeak_tts,
        max_viewers_per_stream=1,
        connect_timeout_seconds=timeout,
    )
    async with running_server(services) as (url, _), aiohttp.ClientSession() as http:
        controller = TestClient(url)
        try:
            stream = (await controller.connect())["stream"]
            ghost = WhepPlayer()
            offer = await ghost.offer()
            await ghost.close()  # it never applies the answer: no ICE, ever
            with caplog.at_level(logging.WARNING, "rtc.outputs.whep"):
                async with http.post(
                    f"{url}/whep/{stream}", data=offer, headers={"Content-Type": SDP}
                ) as resp:
                    assert resp.status == 201
                began = time.monotonic()
                async with http.post(
                    f"{url}/whep/{stream}",
                    data=await WhepPlayer().offer(),
                    headers={"Content-Type": SDP},
                ) as resp:
                    assert resp.status == 503  # the ghost holds the only slot
                while True:
                    async with http.get(f"{url}/api/streams") as resp:
                        listed = (await resp.json())["streams"]
                    if not next(s for s in listed if s["stream"] == stream)["viewers"]:
                        break
                    assert time.monotonic() - began < timeout + 3, "the ghost kept its slot"
                    await asyncio.sleep(0.1)
            assert any("did not connect within" in r.getMessage() for r in caplog.records)
            player = WhepPlayer()  # the slot is free again, for a real player
            try:
                async with http.post(
                    f"{url}/whep/{stream}", data=await player.offer(), headers={"Content-Type": SDP}
                ) as resp:
                    assert resp.status == 201
                    await player.answer(await resp.text())
                await player.wait_for_frames(10)
                await asyncio.sleep(timeout + 0.5)  # past its own deadline: still watching
                async with http.get(f"{url}/api/streams") as resp:
                    listed = (await resp.json())["streams"]
                assert next(s for s in listed if s["stream"] == stream)["viewers"]
            finally:
                await player.close()
        finally:
            await controller.close()


async def test_viewers_share_the_sessions_encoder(
    app_config: AppConfig, avatar_store: AvatarStore, espeak_tts: TextToSpeech
) -> None:
    """Three real WHEP players and the session's own peer: one VP8 encoder for all four, and
    every player decodes what it gets."""
    services = realtime_services(app_config, avatar_store, espeak_tts)
    async with running_server(services) as (url, app), aiohttp.ClientSession() as http:
        controller = TestClient(url, video_codec="video/VP8")
        players = [WhepPlayer() for _ in range(3)]
        try:
            stream = (await controller.connect())["stream"]
            for player in players:
                async with http.post(
                    f"{url}/whep/{stream}", data=await player.offer(), headers={"Content-Type": SDP}
                ) as resp:
                    assert resp.status == 201
                    await player.answer(await resp.text())
            for player in players:
                await player.wait_for_frames(15)
            media = app[REALTIME_KEY].streams.get(stream).media
            assert list(media.groups) == ["video/VP8"]
            assert len(media.groups["video/VP8"].receivers) == 4
            async with http.get(f"{url}/api/streams") as resp:
                (listed,) = (await resp.json())["streams"]
            (encoder,) = listed["encoders"]
            assert encoder["codec"] == "video/VP8" and encoder["receivers"] == 4
            assert all(v["codec"] == "video/VP8" and v["video_sent"] > 0 for v in listed["viewers"])
            # The joiners' keyframe requests were coalesced: never more forced than asked.
            assert encoder["forced_keyframes"] <= encoder["keyframe_requests"]
        finally:
            for player in players:
                await player.close()
            await controller.close()
