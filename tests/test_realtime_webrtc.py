"""End to end over real loopback WebRTC: an aiortc client talks to the real application.

Measured like a viewer would: frame rate and audio continuity from what arrives, lip sync by
cross-correlating the mouth activity seen in the decoded frames with the decoded audio
envelope, interruption by when the received audio goes quiet.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
import pytest
from aiortc import RTCRtpSender
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RtcpPsfbPacket,
    pack_remb_fci,
)

from config import AppConfig
from inference.avatar.store import AvatarStore
from inference.live import lookahead_samples
from inference.tts import TextToSpeech
from rtc.services import Services
from rtc.webrtc.encoding import negotiated_video_codec
from rtc.webrtc.receiving import MIC_PREFETCH
from rtc.webrtc.session import Session
from rtc.webrtc.signalling import REALTIME_KEY
from tests.realtime_peer import (
    FOLLOWS_VOICE,
    STILL_HEAD,
    FakeMicrophone,
    TestClient,
    audio_envelope,
    cross_correlation_lag,
    mouth_activity,
    realtime_services,
    running_server,
    viewer_timelines,
)
from tests.test_webrtc_receiving import buffer_of

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("loopback_ice")]

SYNC_TOLERANCE = 0.040
TEXT = "Папа купил большую карту мира. Мама мыла раму, а мы смотрели на море."


@pytest.fixture
def services(
    app_config: AppConfig, avatar_store: AvatarStore, espeak_tts: TextToSpeech
) -> Services:
    return realtime_services(app_config, avatar_store, espeak_tts, **STILL_HEAD)


def session_of(app: object, client: TestClient) -> Session:
    return app[REALTIME_KEY].sessions[client.session_id]  # type: ignore[index]


async def frames_for(client: TestClient, seconds: float) -> None:
    """Wait until ``seconds`` more of video have arrived."""
    await client.wait_for_frames(
        len(client.received.video_times) + round(seconds * 25), timeout=seconds + 10
    )


@pytest.mark.parametrize("codec", ["video/VP8", "video/H264"])
async def test_say_streams_25_fps_continuous_audio_in_sync(
    services: Services, avatar_store: AvatarStore, codec: str
) -> None:
    """Both codecs the session encodes itself (the client's first choice wins)."""
    box = avatar_store.get("astronaut").frames[0].box
    async with running_server(services) as (url, app):
        client = TestClient(url, mouth_box=box, video_codec=codec)
        try:
            answer = await client.connect(language="ru", avatar="astronaut")
            assert answer["engine"] == "viseme"
            assert negotiated_video_codec(session_of(app, client).pc) == codec
            await client.wait_for_frames(10)
            await asyncio.wait_for(client.channel_open.wait(), 10)
            client.channel.send(json.dumps({"type": "say", "text": TEXT, "id": 1}))
            queued = await client.wait_event("queued")
            assert queued["id"] == 1
            started = await client.wait_event("speaking_started")
            await client.wait_event("speaking_ended", timeout=30)
            await frames_for(client, 0.5)
            session = session_of(app, client)
        finally:
            await client.close()
    received = client.received  # complete: the client's recorders have stopped
    tv, ta = viewer_timelines(
        received, session.first_sent_slot("video") or 0, session.first_sent_slot("audio") or 0
    )
    # Text -> first lip-synced frame on this machine.
    assert started["latency_ms"] < 300
    # 25 fps: every slot of the span arrived (>= 95 %), at the rate of the wall clock.
    expected = (tv[-1] - tv[0]) * 25 + 1
    assert len(tv) >= 0.95 * expected
    arrival_span = received.video_times[-1] - received.video_times[0]
    assert len(tv) / arrival_span >= 0.95 * 25
    # Continuous audio: consecutive 20 ms frames, covering the same time as the video.
    assert set(np.diff(received.audio_pts).tolist()) == {960}
    assert abs((ta[-1] + 0.02) - (tv[-1] + 0.04)) < 0.1
    # Lip sync: mouth activity against the audio envelope.
    envelope = audio_envelope(received)
    activity = mouth_activity(received)
    speech = ta[envelope > 0.02]
    assert speech.size > 50, "no speech arrived"
    assert activity.max() > 5 * (np.median(activity[:5]) + 1)  # the mouth moved
    lag, corr = cross_correlation_lag(tv, activity, ta, envelope, speech[0] - 0.3, speech[-1] + 0.3)
    assert corr > FOLLOWS_VOICE, corr
    assert abs(lag) <= SYNC_TOLERANCE, f"mouth is {lag * 1000:+.0f} ms off the audio"


async def test_interrupt_silences_audio_within_150_ms(services: Services) -> None:
    async with running_server(services) as (url, _):
        client = TestClient(url)
        try:
            await client.connect(language="ru")
            await asyncio.wait_for(client.channel_open.wait(), 10)
            status, body = await client.post("/say", {"text": TEXT * 3})
            assert status == 202
            await client.wait_event("speaking_started")
            await frames_for(client, 1.0)
            received = client.received
            recent = [float(np.sqrt(np.mean(a**2))) for a in received.audio[-25:]]
            assert max(recent) > 0.02, "speech should be playing"
            t_interrupt = time.monotonic()
            client.channel.send(json.dumps({"type": "interrupt"}))
            ended = await client.wait_event("speaking_ended")
            await frames_for(client, 0.6)
        finally:
            await client.close()
    received = client.received
    assert ended["interrupted"] and ended["utterance"] == body["utterance"]
    arrivals = np.array(received.audio_times)
    loud = np.array([float(np.sqrt(np.mean(a**2))) > 0.01 for a in received.audio])
    after = arrivals > t_interrupt
    last_loud = arrivals[after & loud].max() if (after & loud).any() else t_interrupt
    assert last_loud - t_interrupt <= 0.150
    # and it stays quiet (idle): nothing loud arrives later
    assert not loud[arrivals > t_interrupt + 0.2].any()


async def test_microphone_speech_moves_the_mouth(
    services: Services, avatar_store: AvatarStore, espeak_tts: TextToSpeech
) -> None:
    voice = espeak_tts.synthesize("Раз, два, три. Папа, мама, баба.", "ru").pcm
    microphone = FakeMicrophone(voice, start_delay=0.6)
    box = avatar_store.get("astronaut").frames[0].box
    async with running_server(services) as (url, app):
        client = TestClient(url, mouth_box=box, microphone=microphone)
        try:
            await client.connect(avatar="astronaut", echo_mic=True)
            await client.wait_for_frames(5)
            await frames_for(client, 0.6 + voice.size / 16000 + 1.0)
            session = session_of(app, client)
            stats = session.pipeline.stats
            audio_buffer = buffer_of(session.pc, "audio")
        finally:
            await client.close()
    assert audio_buffer._prefetch == MIC_PREFETCH  # the voice is decoded a packet after it came
    received = client.received  # complete: the client's recorders have stopped
    tv, ta = viewer_timelines(
        received, session.first_sent_slot("video") or 0, session.first_sent_slot("audio") or 0
    )
    assert stats.mic_frames > 0 and microphone.speech_started is not None
    activity = mouth_activity(received)
    # The mouth follows the caller's voice: correlate activity (by arrival) with the envelope
    # of what the microphone sent (by send time); the best lag is the mic -> mouth latency.
    sent = np.array(
        [float(np.sqrt(np.mean(voice[i : i + 320] ** 2))) for i in range(0, voice.size, 320)]
    )
    t_sent = microphone.speech_started + np.arange(sent.size) * 0.02
    arrivals = np.array(received.video_times)
    lag, corr = cross_correlation_lag(
        t_sent, sent, arrivals, activity, t_sent[0] - 0.2, t_sent[-1] + 0.2, max_lag=0.8
    )
    latency = -lag  # the video trails the voice, by at least the engine's look-ahead
    assert corr > FOLLOWS_VOICE and lookahead_samples(6) / 16000 < latency < 0.6, (corr, latency)
    # The echoed voice and the mouth leave together, as for speech.
    envelope = audio_envelope(received)
    speech = ta[envelope > 0.02]
    assert speech.size > 25, "the echoed voice did not come back"
    lag, corr = cross_correlation_lag(tv, activity, ta, envelope, speech[0] - 0.3, speech[-1] + 0.3)
    assert corr > FOLLOWS_VOICE and abs(lag) <= SYNC_TOLERANCE, (lag, corr)


async def test_say_without_a_language_uses_the_sessions_on_both_paths(services: Services) -> None:
    """Data channel and HTTP alike: a say without a language speaks the session's language
    (the data channel used the server default, docs/api.md promised the session's)."""
    async with running_server(services) as (url, app):
        client = TestClient(url)
        try:
            await client.connect(language="kk")
            await asyncio.wait_for(client.channel_open.wait(), 10)
            session = session_of(app, client)
            spoken: list[str] = []
            say = session.pipeline.say

            def spy(text: str, language: str, options: Any = None) -> Any:
                spoken.append(language)
                return say(text, language, options)

            session.pipeline.say = spy  # type: ignore[method-assign]
            client.channel.send(json.dumps({"type": "say", "text": "Сәлем.", "id": 1}))
            await client.wait_event("queued")
            client.channel.send(
                json.dumps({"type": "say", "text": "Hello.", "language": "en", "id": 2})
            )
            await client.wait_event("queued")
            await client.post("/say", {"text": "Сәлем."})
            client.channel.send(json.dumps({"type": "say", "text": "x", "language": 7}))
            error = await client.wait_event("error")
            assert "'language' must be a string" in error["message"]
        finally:
            await client.close()
    assert spoken == ["kk", "en", "kk"]


async def test_real_rtp_sender_routes_pli_and_remb_to_the_encoder(services: Services) -> None:
    """Against aiortc's own RTCRtpSender, not an imitation: the private hooks that
    rtc/webrtc/encoding.py relies on (``_send_keyframe``, the sender's ``__encoder.target_bitrate``)
    exist in the installed aiortc and its RTCP handling calls them. If aiortc renamed them,
    keyframe requests and bandwidth feedback would silently stop working; this would fail."""
    async with running_server(services) as (url, app):
        client = TestClient(url)
        try:
            await client.connect()
            await client.wait_for_frames(5)
            session = session_of(app, client)
            track = session.video_out
            (sender,) = [s for s in session.pc.getSenders() if s.track is track]
            assert isinstance(sender, RTCRtpSender)
            receiver = track.receiver
            assert receiver is not None and receiver.codec is not None
            group = session.media.groups[receiver.codec]
            ssrc = sender._ssrc
            before = receiver.keyframe_requests
            for fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                await sender._handle_rtcp_packet(RtcpPsfbPacket(fmt=fmt, ssrc=1, media_ssrc=ssrc))
            assert receiver.keyframe_requests == before + 2
            assert receiver.estimate() is None  # no REMB yet: the ceiling stands
            remb = RtcpPsfbPacket(
                fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(300_000, [ssrc])
            )
            await sender._handle_rtcp_packet(remb)
            assert receiver.estimate() == 300_000
            encoder = group.encoder
            frames = len(client.received.video_times)
            await client.wait_for_frames(frames + 3)  # the next encodes follow the estimate
            assert encoder.bitrate == 300_000
        finally:
            await client.close()


async def test_the_avatar_switches_live_on_the_received_frames(services: Services) -> None:
    async with running_server(services) as (url, app):
        client = TestClient(url)
        try:
            await client.connect(avatar="cartoon")
            await client.wait_for_frames(10)
            await asyncio.wait_for(client.channel_open.wait(), 10)
            before = client.received.mouth[-1]
            client.channel.send(json.dumps({"type": "avatar", "avatar": "astronaut", "id": 7}))
            reply = await client.wait_event("avatar_switched")
            switched_at = len(client.received.mouth)
            assert reply["avatar"] == "astronaut" and reply["id"] == 7
            await client.wait_for_frames(switched_at + 25)  # one second later
            after = client.received.mouth[-1]
            session = session_of(app, client)
            assert session.describe()["avatar"] == "astronaut"
            client.channel.send(json.dumps({"type": "avatar", "avatar": "nobody"}))
            error = await client.wait_event("error")
            assert "nobody" in error["message"]
            status, body = await client.post("/avatar", {"avatar": "cartoon"})
            assert status == 200 and body == {"avatar": "cartoon"}
        finally:
            await client.close()
    # The face really changed on the wire: another picture (size or content).
    assert before.shape != after.shape or float(np.abs(before.astype(int) - after).mean()) > 20
