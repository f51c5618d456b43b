"""Publishing a live stream into a Janus VideoRoom: the SFU then serves the audience.

    POST   /api/streams/{stream}/publish   {"kind": "janus", "url", "room", "display", ...}
    GET    /api/publications               every publication and its state
    GET    /api/publications/{id}
    DELETE /api/publications/{id}          leave the room, free everything

A publication is one more receiver of the stream's shared encoders (rtc/webrtc/fanout.py):
Janus gets the packets every viewer gets (VP8, the rooms' default, and Opus), over an aiortc
peer whose offer Janus answers. Its states: ``connecting`` (signalled, ICE under way),
``live`` (media flowing), ``retrying`` (Janus went away, restarted, timed the session out,
deleted the room, or ICE failed: it reconnects with backoff by itself), ``failed`` (a reason
that retrying cannot fix: no such room, a wrong pin). Every change is a
``publication_state`` event of the stream's session and is counted in /metrics. The avatar
session and its other receivers never notice any of it: a publication is one queue among many.

The first attempt happens inside the POST, so bad input is an immediate error (502 no Janus
there, 404 no such room, 403 refused); later faults only move the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription

from rtc.http.bodies import PublishBody
from rtc.live.event_kinds import PublicationState
from rtc.outputs.janus import VIDEOROOM, JanusError, JanusSession, JanusUnreachable
from rtc.outputs.relay import Relay, open_relay
from rtc.outputs.streams import Stream
from rtc.outputs.whep import preferred_video_codecs
from rtc.webrtc.encoding import ENCODED_CODECS, follow_receiver_feedback, video_codec_of
from rtc.webrtc.fanout import PacketTrack
from rtc.webrtc.ice import rtc_configuration
from rtc.webrtc.packet_sender import send_attached_packets

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15.0
"""Seconds from Janus's answer to a connected peer before the attempt counts as failed."""
BACKOFF = (0.5, 1.0, 2.0, 4.0)
"""Seconds between reconnection attempts (the last repeats): back within ~5 s of Janus."""
PERMANENT = {426: "no such room", 433: "unauthorized (wrong pin or secret)", 428: "no such feed"}
"""Janus VideoRoom error codes that retrying cannot fix."""
ENDING_EVENTS = ("hangup", "detached")
"""Janus core events that end the publisher's peer."""

Emit = Callable[[dict[str, Any]], None]


class PublishRefused(Exception):
    """The first attempt failed for a reason the client must fix: ``status`` is the HTTP
    status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Publication:
    """One stream published into one Janus room, kept there until stopped."""

    def __init__(
        self, stream: Stream, target: PublishBody, ice_servers: tuple[str, ...], emit: Emit
    ) -> None:
        self.id = "p-" + secrets.token_urlsafe(6)
        self.stream = stream
        self.target = target
        self.ice_servers = ice_servers
        self._emit = emit
        self.state = "connecting"
        self.reason: str | None = None
        self.feed: int | None = None
        self.attempts = 0
        self.retries = 0
        self._http: aiohttp.ClientSession | None = None
        self._janus: JanusSession | None = None
        self._handle: int | None = None
        self._pc: RTCPeerConnection | None = None
        self._tracks: list[PacketTrack] = []
        self._ended = asyncio.Event()
        """Set when the current attempt's peer or Janus session is gone."""
        self._task: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._relays: list[Relay] = []
        self._stopped = False

    # --- life cycle ---------------------------------------------------------------------

    async def start(self, persistent: bool = False) -> None:
        """First attempt now, then keep it up in the background. A failed first attempt is
        PublishRefused (bad input, for the HTTP client to fix), or with ``persistent``
        (``serve --publish``: Janus may start after us) the first retry."""
        self._http = aiohttp.ClientSession()
        try:
            await self._attempt()
        except Exception as e:  # whatever failed, nothing of this attempt may stay behind
            if not isinstance(e, JanusUnreachable | JanusError | OSError | ValueError):
                log.exception("publication %s: first attempt failed", self.id)
            await self._teardown()
            if not persistent:
                await self._http.close()
                raise _refusal(e, self.target) from None
            self.reason = str(e)
            self._ended.set()
        self._task = asyncio.get_running_loop().create_task(
            self._keep_up(), name=f"publication-{self.id}"
        )

    async def stop(self, reason: str = "stopped") -> None:
        """Leave the room and free everything (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._teardown(leave=True)
        if self._http is not None:
            await self._http.close()
        self._set("stopped", reason)

    async def _keep_up(self) -> None:
        while True:
            await self._ended.wait()
            self.retries += 1  # one loss of Janus, however many attempts it takes
            delay = 0
            while True:
                await self._teardown()
                self._set("retrying", self.reason)
                await asyncio.sleep(BACKOFF[min(delay, len(BACKOFF) - 1)])
                delay += 1
                try:
                    await self._attempt()
                    break
                except JanusError as e:
                    if e.code in PERMANENT:
                        await self._teardown()
                        self._set("failed", f"{PERMANENT[e.code]}: {e.reason}")
                        return
                    self.reason = str(e)
                except (JanusUnreachable, OSError, ValueError, TimeoutError) as e:
                    self.reason = str(e) or type(e).__name__
                except Exception as e:  # a bug or a surprise from Janus: log it, keep trying
                    log.exception("publication %s: attempt failed", self.id)
                    self.reason = f"{type(e).__name__}: {e}"

    # --- one attempt -------------------------------------------------------------------

    async def _attempt(self) -> None:
        assert self._http is not None
        self.attempts += 1
        self._ended = asyncio.Event()
        janus = self._janus = JanusSession(self._http, self.target.url)
        await janus.create()
        handle = self._handle = await janus.attach(VIDEOROOM)
        target = self.target
        if target.create_room:
            await self._create_room(janus, handle)
        join: dict[str, Any] = {
            "request": "join",
            "ptype": "publisher",
            "room": target.room,
            "display": target.display,
        }
        if target.pin is not None:
            join["pin"] = target.pin
        if target.feed is not None:
            join["id"] = target.feed
        joined, _ = await janus.message(handle, join)
        self.feed = int(joined["id"]) if "id" in joined else None
        pc = self._pc = RTCPeerConnection(rtc_configuration(list(self.ice_servers)))
        video, audio = PacketTrack("video"), PacketTrack("audio")
        self._tracks = [video, audio]
        video_transceiver = pc.addTransceiver(video, direction="sendonly")
        video_transceiver.setCodecPreferences(preferred_video_codecs())
        pc.addTransceiver(audio, direction="sendonly")
        pc.on("connectionstatechange", self._on_peer_state)
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"type": "offer", "sdp": pc.localDescription.sdp}
        _, answer = await janus.message(handle, {"request": "publish"}, jsep=offer)
        if answer is None or answer.get("type") != "answer":
            raise JanusUnreachable("Janus accepted the publish request without an SDP answer")
        codec = _answered_codec(str(answer["sdp"]))
        self._set("connecting", None)
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        media = self.stream.media
        receiver = media.video_receiver(codec, f"janus-{self.id}")
        video.attach(receiver, media.remove)
        follow_receiver_feedback(video_transceiver.sender, receiver)
        audio.attach(media.audio_receiver(f"janus-{self.id}"), media.remove)
        send_attached_packets(pc)
        await janus.trickle_completed(handle)
        mids = [t.mid or str(k) for k, t in enumerate(pc.getTransceivers())]
        for k, relay in enumerate(target.relays):
            remote_id = f"{self.id}-{k}"
            self._relays.append(
                await open_relay(self._http, janus, handle, relay, codec, mids, self, remote_id)
            )
        watched = [janus, *(r.janus for r in self._relays)]
        self._watcher = asyncio.get_running_loop().create_task(
            self._watch(watched, pc), name=f"publication-watch-{self.id}"
        )

    async def _create_room(self, janus: JanusSession, handle: int) -> None:
        body: dict[str, Any] = {
            "request": "create",
            "room": self.target.room,
            "publishers": 16,
            "videocodec": "vp8",
            "audiocodec": "opus",
        }
        if self.target.secret is not None:
            body["secret"] = self.target.secret
        if self.target.pin is not None:
            body["pin"] = self.target.pin
        if self.target.admin_key is not None:
            body["admin_key"] = self.target.admin_key
        try:
            await janus.request(handle, body)
        except JanusError as e:
            if e.code != 427:  # 427: the room exists already, which is what we want
                raise

    async def _watch(self, sessions: list[JanusSession], pc: RTCPeerConnection) -> None:
        """Until this attempt's Janus session (or a relay's) ends, Janus hangs the peer up,
        the room goes, or ICE has not connected in time; then ``_ended`` (the peer's own
        failure sets it too, in ``_on_peer_state``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_TIMEOUT
        janus = sessions[0]
        while True:
            waiting = pc.connectionState != "connected"
            get = loop.create_task(janus.events.get())
            losses: dict[asyncio.Task[Any], JanusSession] = {
                loop.create_task(s.lost.wait()): s for s in sessions
            }
            done, pending = await asyncio.wait(
                {get, *losses},
                timeout=max(0.0, deadline - loop.time()) if waiting else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in pending:
                task.cancel()
            lost = next((losses[t] for t in done if t in losses), None)
            if lost is not None:
                self.reason = lost.lost_reason
                break
            if get in done:
                if self._ends(get.result()):
                    break
                continue
            if pc.connectionState != "connected":
                self.reason = f"ICE did not connect to Janus within {CONNECT_TIMEOUT:g} s"
                break
        self._ended.set()

    def _ends(self, event: dict[str, Any]) -> bool:
        kind = event.get("janus")
        if kind in ENDING_EVENTS:
            self.reason = f"Janus: {kind} ({event.get('reason', '')})".strip()
            return True
        data = event.get("plugindata", {}).get("data", {})
        if isinstance(data, dict) and data.get("videoroom") == "destroyed":
            self.reason = f"room {self.target.room} was destroyed"
            return True
        return False

    def _on_peer_state(self) -> None:
        pc = self._pc
        if pc is None:
            return
        if pc.connectionState == "connected" and self.state != "live":
            self._set("live", None)
        elif pc.connectionState in ("failed", "closed") and not self._stopped:
            self.reason = f"peer connection {pc.connectionState}"
            self._ended.set()

    async def _teardown(self, leave: bool = False) -> None:
        janus, handle, pc = self._janus, self._handle, self._pc
        self._janus = self._handle = self._pc = None
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        for track in self._tracks:
            track.stop()  # its receiver leaves the fan-out
        self._tracks = []
        if pc is not None:
            pc.remove_all_listeners()
            await pc.close()
        relays, self._relays = self._relays, []
        for relay in relays:
            await relay.close(janus, handle, self.target.room, self.feed, self.target.secret)
        if janus is not None:
            if leave and handle is not None and not janus.lost.is_set():
                with contextlib.suppress(JanusError, JanusUnreachable):
                    await janus.request(handle, {"request": "leave"})
                with contextlib.suppress(JanusError, JanusUnreachable):
                    await janus.detach(handle)
            with contextlib.suppress(JanusError, JanusUnreachable):
                await janus.destroy()

    # --- state -------------------------------------------------------------------------

    def _set(self, state: str, reason: str | None) -> None:
        changed = state != self.state
        self.state, self.reason = state, reason
        if changed:
            log.info("publication %s of %s: %s %s", self.id, self.stream.name, state, reason or "")
            self._emit(PublicationState(self.id, state=state, reason=reason).to_wire())

    def describe(self) -> dict[str, Any]:
        """The publication for the API."""
        return {
            "id": self.id,
            "stream": self.stream.name,
            "kind": "janus",
            "state": self.state,
            "reason": self.reason,
            "url": self.target.url,
            "room": self.target.room,
            "display": self.target.display,
            "feed": self.feed,
            "attempts": self.attempts,
            "retries": self.retries,
            "relays": [r.describe() for r in self._relays],
        }


def _answered_codec(sdp: str) -> str:
    codec = video_codec_of(sdp)
    if codec is None:
        raise ValueError("Janus's answer has no video")
    if codec not in ENCODED_CODECS:
        raise ValueError(f"Janus answered video as {codec}; the server sends {ENCODED_CODECS}")
    return codec


def _refusal(error: Exception, target: PublishBody) -> PublishRefused:
    if isinstance(error, JanusError):
        if error.code == 426:
            return PublishRefused(
                404,
                f"Janus at {target.url} has no room {target.room}; create it there or send "
                '"create_room": true',
            )
        if error.code in (433, 403):
            return PublishRefused(403, f"Janus refused the request: {error.reason}")
        if error.code in (429, 430):  # a missing or invalid element, e.g. the admin_key
            return PublishRefused(400, f"Janus refused the request: {error.reason}")
        return PublishRefused(502, f"Janus at {target.url} refused: {error}")
    if isinstance(error, JanusUnreachable):
        return PublishRefused(502, str(error))
    return PublishRefused(502, f"publishing to {target.url} failed: {error}")
