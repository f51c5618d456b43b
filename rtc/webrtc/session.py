"""A realtime session: one peer connection, its pipeline, tracks, events and tasks.

The session owns every task it starts and ends them all in :meth:`Session.close`, which is
idempotent and is reached from every way a session can end: DELETE, a closed or failed peer,
the idle timeout, a peer that does not connect in time, server shutdown, or an error in one
of its tasks (logged; the server keeps serving).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable, Coroutine
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from config import RealtimeConfig
from inference.audio_io import MonoDownmix, frame_key
from inference.avatar.store import Avatar
from inference.tts import VoiceOptions
from rtc.http.bodies import SayBody
from rtc.http.errors import error_text
from rtc.live.batcher import Batcher
from rtc.live.clock import MediaClock
from rtc.live.event_kinds import ErrorEvent, SessionClosed
from rtc.live.events import EventHub
from rtc.live.options import PipelineOptions
from rtc.live.pipeline import Event, Pipeline
from rtc.live.speech import Utterance
from rtc.services import Services
from rtc.webrtc.channel import answer
from rtc.webrtc.encoding import answered_video_codec, follow_receiver_feedback
from rtc.webrtc.fanout import FanoutSettings, MediaFanout, PacketTrack
from rtc.webrtc.ice import rtc_configuration
from rtc.webrtc.packet_sender import send_attached_packets
from rtc.webrtc.receiving import shorten_mic_buffer
from rtc.webrtc.tracks import AvatarAudioTrack, AvatarVideoTrack

log = logging.getLogger(__name__)

DISCONNECT_GRACE = 10.0
"""Seconds a 'disconnected' peer may take to come back before the session is closed."""
MIC_ACTIVITY_RMS = 0.01
"""Caller audio louder than this counts as activity for the idle timeout."""


class OfferError(ValueError):
    """The SDP offer cannot be used; the message says what to change."""


class Session:
    """One caller: peer connection, pipeline, tracks, events."""

    def __init__(
        self,
        services: Services,
        batcher: Batcher,
        *,
        engine: str,
        avatar: Avatar,
        language: str,
        live: RealtimeConfig,
        options: PipelineOptions,
        on_closed: Callable[[Session], None],
    ) -> None:
        self.id = secrets.token_urlsafe(9)
        self.engine = engine
        self.avatar = avatar
        self.language = language
        self.services = services
        self.options = options
        self.clock = MediaClock()
        self.events = EventHub(self.id)
        self.pipeline = Pipeline(
            self.id, self.clock, batcher, avatar, services.tts, self._emit, options
        )
        self.video = AvatarVideoTrack(
            self.clock, self.pipeline.video_queue, self.pipeline.first_frame
        )
        self.audio = AvatarAudioTrack(self.clock, self.pipeline.audio_queue)
        settings = FanoutSettings(
            live.video_bitrate, live.min_video_bitrate, live.keyframe_gap, live.h264_encoder
        )
        self.media = MediaFanout(self.video, self.audio, settings, name=self.id)
        """The stream's encoders: the released frames encoded once for every receiver."""
        self.video_out = PacketTrack("video")
        """What the peer connection sends: the fan-out's packets of the answered codec."""
        self.audio_out = PacketTrack("audio")
        self.pc = RTCPeerConnection(rtc_configuration(live.ice_servers))
        self.channel: RTCDataChannel | None = None
        self.closed = asyncio.Event()
        self._idle_seconds = live.session_idle_seconds
        self._connect_timeout = live.connect_timeout_seconds
        self._connected = asyncio.Event()
        """Set once the peer connection has reached "connected" (it may drop later)."""
        self._on_closed = on_closed
        self.event_listeners: list[Callable[[Event], None]] = []
        """Called with every event the session emits (metrics count the errors)."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.last_activity = self.clock.now()

    # --- set-up ------------------------------------------------------------------------

    async def accept(self, sdp: str, kind: str) -> RTCSessionDescription:
        """Apply the browser's offer and return the answer (candidates included)."""
        if "\nm=" not in sdp.replace("\r\n", "\n"):
            raise OfferError("invalid SDP offer: it has no media sections (m= lines)")
        pc = self.pc
        pc.on("datachannel", self._on_datachannel)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_connection_state)
        try:
            offer = RTCSessionDescription(sdp=sdp, type=kind)
            await pc.setRemoteDescription(offer)
        except Exception as e:  # aiortc raises many types for malformed SDP
            raise OfferError(f"invalid SDP offer: {error_text(e)}") from e
        shorten_mic_buffer(pc, self.id)  # 60 ms less from the caller's voice to the mouth
        kinds = [t.kind for t in pc.getTransceivers()]
        if "video" not in kinds:
            raise OfferError("the offer has no video m-line; add a recvonly video transceiver")
        video_sender = pc.addTrack(self.video_out)
        if "audio" in kinds:
            pc.addTrack(self.audio_out)
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        try:
            codec = answered_video_codec(pc)
        except ValueError as e:
            raise OfferError(str(e)) from None
        video = self.media.video_receiver(codec, "session")
        self.video_out.attach(video, self.media.remove)
        follow_receiver_feedback(video_sender, video)
        if "audio" in kinds:
            self.audio_out.attach(self.media.audio_receiver("session"), self.media.remove)
        send_attached_packets(self.pc)
        self.pipeline.start()
        self.media.start()
        self._spawn(self._watchdog(), "watchdog")
        self._spawn(self._connect_deadline(), "connect-deadline")
        log.info("session=%s started: engine=%s avatar=%s", self.id, self.engine, self.avatar.name)
        return pc.localDescription

    def start_without_peer(self) -> None:
        """Run with no caller (an always-on stream): no idle or connect timeout."""
        self.pipeline.start()
        self.media.start()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(self._guard(coro, name), name=f"{name}-{self.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("session=%s %s failed; closing the session", self.id, name)
            self._emit(ErrorEvent(f"{name} failed: {e}").to_wire())
            asyncio.get_running_loop().call_soon(self._close_soon, f"{name} failed")

    # --- inputs ------------------------------------------------------------------------

    def touch(self) -> None:
        """Record activity (postpones the idle timeout)."""
        self.last_activity = self.clock.now()

    def say(
        self, text: str, language: str | None, options: VoiceOptions | None = None
    ) -> Utterance:
        """Speak ``text``; all already validated. Raises QueueFull."""
        self.touch()
        return self.pipeline.say(text, language or self.language, options)

    def say_body(self, body: SayBody) -> Utterance:
        """A ``say`` from HTTP or the data channel: the text checked, the language the
        body's or else the session's. ValueError for bad input, QueueFull when full."""
        text = self.services.check_text(body.text)
        language = self.services.language(body.language) if body.language else self.language
        return self.say(text, language, self.services.voice_options(language, body))

    def switch_avatar(self, name: str) -> str:
        """Show avatar ``name`` from now on; its name. ValueError for an unknown one."""
        self.touch()
        avatar = self.services.avatars.get(name)
        self.avatar = avatar
        self.pipeline.switch_avatar(avatar)
        return avatar.name

    def interrupt(self) -> list[str]:
        """Stop speaking now."""
        self.touch()
        return self.pipeline.interrupt()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(self._read_mic(track), "microphone")
        else:  # nobody watches the caller's camera, but its frames must not pile up
            self._spawn(self._drain(track), "drain")

    async def _read_mic(self, track: MediaStreamTrack) -> None:
        # Browsers send 48 kHz stereo; the pipeline runs at 16 kHz mono. A single-threaded
        # filter graph: av.AudioResampler's starts one worker per CPU for every session.
        downmix: MonoDownmix | None = None
        log.info("session=%s microphone track received", self.id)
        try:
            while True:
                frame = await track.recv()
                if not isinstance(frame, av.AudioFrame) or not frame.samples:
                    continue
                if downmix is None or downmix.key != frame_key(frame):
                    downmix = MonoDownmix(frame)
                for pcm in downmix.push(frame):
                    if pcm.size and float(np.abs(pcm).max()) > MIC_ACTIVITY_RMS:
                        self.touch()
                    self.pipeline.push_mic(pcm)
        except MediaStreamError:
            log.info("session=%s microphone track ended", self.id)

    async def _drain(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        self.channel = channel

        @channel.on("message")
        def on_message(message: object) -> None:
            self._handle_message(channel, message)

    def _handle_message(self, channel: RTCDataChannel, message: object) -> None:
        _send(channel, answer(self, message))

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.info("session=%s connection %s", self.id, state)
        if state == "connected":
            self._connected.set()
        elif state in ("failed", "closed"):
            self._close_soon(f"peer connection {state}")
        elif state == "disconnected":
            self._spawn(self._disconnect_grace(), "disconnect-grace")

    async def _disconnect_grace(self) -> None:
        await asyncio.sleep(DISCONNECT_GRACE)
        if self.pc.connectionState in ("disconnected", "failed"):
            await self.close("peer disconnected")

    async def _connect_deadline(self) -> None:
        # A peer that offers and then never answers connectivity checks would hold its slot
        # until aioice gives up (~64 s): a few such offers could fill every slot.
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self._connected.wait()
        except TimeoutError:
            log.warning(
                "session=%s peer did not connect within %g s (connection %s)",
                self.id,
                self._connect_timeout,
                self.pc.connectionState,
            )
            self._close_soon(f"peer did not connect within {self._connect_timeout:g} s")

    async def _watchdog(self) -> None:
        period = max(0.05, min(5.0, self._idle_seconds / 4))
        while True:
            await asyncio.sleep(period)
            if self.clock.now() - self.last_activity > self._idle_seconds:
                self._close_soon(f"idle for {self._idle_seconds:g} s")
                return

    # --- events and state --------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Send an event about something the session carries (a recording of its stream) to
        its SSE subscribers, its data channel and its listeners, as its own events go."""
        self._emit(event)

    def _emit(self, event: Event) -> None:
        event = {**event, "session": self.id}
        self.events.publish(event)
        for listener in self.event_listeners:
            listener(event)
        # A dead connection cannot carry it: aiortc's send would fail later, in a task
        # whose error nobody retrieves (one log trace per vanished peer).
        if self.channel is not None and self.pc.connectionState not in ("closed", "failed"):
            _send(self.channel, event)

    def first_sent_slot(self, kind: str) -> int | None:
        """Clock slot of the first ``kind`` packet the caller's peer sent (maps its RTP
        times, counted from that packet, back to the session clock)."""
        receiver = (self.video_out if kind == "video" else self.audio_out).receiver
        return receiver.first_slot if receiver is not None else None

    def describe(self) -> dict[str, Any]:
        """State and counters, for the API and the page's stats."""
        stats = self.pipeline.stats
        return {
            "session_id": self.id,
            "engine": self.engine,
            "avatar": self.avatar.name,
            "connection": self.pc.connectionState,
            "speaking": self.pipeline.speaking,
            "echo_mic": self.options.echo_mic,
            # first_slot: of the first packet the caller's peer sent (the tracks release
            # from the answer on; the peer's RTP times count from its first packet).
            "video": vars(self.video.stats) | {"first_slot": self.first_sent_slot("video")},
            "audio": vars(self.audio.stats) | {"first_slot": self.first_sent_slot("audio")},
            "pipeline": {k: v for k, v in vars(stats).items() if k != "errors"}
            | {"errors": stats.errors[-5:]},
            "batcher": {
                "latency_ms": round(self.pipeline.batcher.stats.latency * 1000, 1),
                "pending": self.pipeline.batcher.pending,
            },
        }

    # --- closing -----------------------------------------------------------------------

    def _close_soon(self, reason: str) -> None:
        if not self._closing:
            task = asyncio.create_task(self.close(reason), name=f"close-{self.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self, reason: str = "closed") -> None:
        """End everything this session started (idempotent; safe from its own tasks)."""
        if self._closing:
            await self.closed.wait()
            return
        self._closing = True
        log.info("session=%s closing: %s", self.id, reason)
        self._emit(SessionClosed(reason).to_wire())
        current = asyncio.current_task()
        doomed = [t for t in self._tasks if t is not current]
        for task in doomed:
            task.cancel()
        await asyncio.gather(*doomed, return_exceptions=True)
        await self.pipeline.close()
        await self.media.close()  # frees the encoders now (see AudioEncoder.close)
        for track in (self.video_out, self.audio_out, self.video, self.audio):
            track.stop()
        try:
            await self.pc.close()
        except Exception:  # a half-negotiated peer may fail to close; nothing is left to free
            log.exception("session=%s peer close failed", self.id)
        # The peer's handlers are this session's bound methods: a cycle that would keep the
        # session, its encoders and their native threads alive until a full collection.
        self.pc.remove_all_listeners()
        if self.channel is not None:
            self.channel.remove_all_listeners()
        self.events.close()
        self.closed.set()
        self._on_closed(self)


def _send(channel: RTCDataChannel, event: Event) -> None:
    if channel.readyState == "open":
        try:
            channel.send(json.dumps(event))
        except Exception:  # the channel closed between the check and the send
            log.debug("data channel send failed", exc_info=True)
