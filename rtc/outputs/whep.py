"""WHEP playback of live streams (draft-ietf-wish-whep) and the OBS viewer page.

    OPTIONS /whep/{stream}              204, Accept-Post: application/sdp (CORS preflight too)
    POST    /whep/{stream}              application/sdp recvonly offer -> 201 + SDP answer,
                                        Location: /whep/{stream}/{viewer}, Link: ice-server
    DELETE  /whep/{stream}/{viewer}     200, the viewer ends
    PATCH   /whep/{stream}/{viewer}     405 (aiortc gathers every candidate before answering,
                                        so trickle ICE is not needed)
    GET     /api/streams                live streams and their viewers
    GET     /obs/{stream}               full-window viewer page for OBS Browser Sources

A viewer gets the packets of the stream's shared encoder (rtc/webrtc/fanout.py: no extra model
run, no extra encode); each viewer is its own peer connection, which only packetizes and
encrypts. Answers prefer VP8, which every
browser decodes (OBS's Linux browser has no H.264). The bearer token, when configured, is
checked by rtc.http.auth for every /whep/ request except OPTIONS.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from config import RealtimeConfig
from rtc.http.bodies import MAX_SDP_BYTES
from rtc.http.errors import RETRY_AFTER, ApiError, error_text
from rtc.http.pages import page
from rtc.outputs.streams import Stream, StreamFull, StreamRegistry, Viewer
from rtc.webrtc.encoding import answered_video_codec, follow_receiver_feedback
from rtc.webrtc.ice import parse_ice_server, rtc_configuration
from rtc.webrtc.packet_sender import send_attached_packets
from rtc.webrtc.signalling import REALTIME_KEY

log = logging.getLogger(__name__)

SDP_TYPE = "application/sdp"
ALLOW_RESOURCE = "OPTIONS, POST"
ALLOW_VIEWER = "DELETE, OPTIONS"


def preferred_video_codecs(first: str = "video/VP8") -> list[RTCRtpCodecCapability]:
    """aiortc's video codecs with ``first`` (and its retransmission codec) in front."""
    codecs = RTCRtpSender.getCapabilities("video").codecs
    lead = [c for c in codecs if c.mimeType.lower() == first.lower()]
    lead += [c for c in codecs if c.mimeType.lower() == "video/rtx"]
    return lead + [c for c in codecs if c not in lead]


def ice_server_links(urls: tuple[str, ...]) -> list[str]:
    """One ``Link: <url>; rel="ice-server"`` value per configured STUN/TURN server."""
    links = []
    for url in urls:
        server = parse_ice_server(url)
        link = f'<{server.urls}>; rel="ice-server"'
        if server.username is not None:
            link += (
                f'; username="{server.username}"; credential="{server.credential}"'
                '; credential-type="password"'
            )
        links.append(link)
    return links


class Whep:
    """WHEP viewers of the realtime sessions' streams: their peers and how they end."""

    def __init__(self, streams: StreamRegistry, live: RealtimeConfig) -> None:
        self.streams = streams
        self.live = live
        self.peers: dict[str, RTCPeerConnection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._deadlines: dict[str, asyncio.Task[None]] = {}
        """Viewer id -> its :meth:`_connect_deadline`, until its peer connects or it ends."""

    def _stream(self, request: web.Request) -> Stream:
        name = request.match_info["stream"]
        stream = self.streams.get(name)
        if stream is None:
            raise ApiError(
                404,
                f"no live stream called {name!r}; start a session first "
                "(POST /offer) and use the 'stream' of its answer",
            )
        return stream

    async def options(self, request: web.Request) -> web.Response:
        """OPTIONS /whep/{stream}: what the resource accepts (and a CORS preflight)."""
        return web.Response(
            status=204,
            headers={
                "Accept-Post": SDP_TYPE,
                "Allow": ALLOW_RESOURCE,
                "Access-Control-Allow-Methods": "OPTIONS, POST, DELETE",
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Expose-Headers": "Location, Link",
            },
        )

    async def post(self, request: web.Request) -> web.Response:
        """POST /whep/{stream}: an SDP offer in, a viewer's SDP answer out (201)."""
        if request.content_type != SDP_TYPE:
            raise ApiError(
                415,
                f"send the offer as Content-Type: {SDP_TYPE} "
                f"(got {request.content_type or 'none'})",
                {"Accept-Post": SDP_TYPE},
            )
        if (request.content_length or 0) > MAX_SDP_BYTES:
            raise ApiError(413, f"the offer is larger than {MAX_SDP_BYTES} bytes")
        sdp = (await request.content.read(MAX_SDP_BYTES + 1)).decode("utf-8", "replace")
        if len(sdp) > MAX_SDP_BYTES:
            raise ApiError(413, f"the offer is larger than {MAX_SDP_BYTES} bytes")
        if "\nm=video" not in sdp.replace("\r\n", "\n"):
            raise ApiError(400, "the offer has no video m-line; add a recvonly video transceiver")
        stream = self._stream(request)
        try:
            viewer = stream.add_viewer(self._viewer_ended)
        except StreamFull as e:
            raise ApiError(503, str(e), {"Retry-After": RETRY_AFTER}) from None
        pc = RTCPeerConnection(rtc_configuration(self.live.ice_servers))
        self.peers[viewer.id] = pc
        try:
            answer = await self._answer(pc, viewer, sdp)
        except BaseException:
            stream.remove_viewer(viewer.id)
            raise
        location = f"/whep/{stream.name}/{viewer.id}"
        headers: dict[str, Any] = {
            "Location": location,
            "Content-Type": SDP_TYPE,
            "ETag": f'"{viewer.id}"',
        }
        # body=, not text=: aiohttp would add "; charset=utf-8", and WHEP players compare
        # the type literally (RFC 9725 says application/sdp).
        response = web.Response(status=201, body=answer.encode(), headers=headers)
        for link in ice_server_links(self.live.ice_servers):
            response.headers.add("Link", link)
        log.info(
            "session=%s WHEP viewer %s of stream %s", stream.session_id, viewer.id, stream.name
        )
        # The peer cannot connect before it has the answer: every viewer starts unconnected.
        self._deadlines[viewer.id] = asyncio.get_running_loop().create_task(
            self._connect_deadline(viewer), name=f"whep-deadline-{viewer.id}"
        )
        return response

    async def _connect_deadline(self, viewer: Viewer) -> None:
        """End a viewer whose peer has not connected in time: without this, a player that
        took the answer and never did ICE would hold a viewer slot until aioice gives up
        (about 64 s), and a few of them would lock everyone else out of the stream."""
        # Cancelled when the peer connects or the viewer ends (on_state, _viewer_ended).
        await asyncio.sleep(self.live.connect_timeout_seconds)
        self._deadlines.pop(viewer.id, None)
        log.warning(
            "WHEP viewer %s of stream %s did not connect within %.0f s; ending it",
            viewer.id,
            viewer.stream,
            self.live.connect_timeout_seconds,
        )
        self._remove(viewer)

    async def _answer(self, pc: RTCPeerConnection, viewer: Viewer, sdp: str) -> str:
        # Transceivers added before the offer is applied are matched to its m-lines by kind,
        # so their codec preferences (VP8 first) decide the answer's codecs.
        video = pc.addTransceiver(viewer.video, direction="sendonly")
        video.setCodecPreferences(preferred_video_codecs())
        pc.addTransceiver(viewer.audio, direction="sendonly")

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                self._cancel_deadline(viewer.id)
            if pc.connectionState in ("failed", "closed"):
                self._remove(viewer)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as e:  # aiortc raises many types for unusable SDP
            raise ApiError(400, f"invalid SDP offer: {error_text(e)}") from None
        try:
            codec = answered_video_codec(pc)
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        # The stream's packets of that codec: its encoder is shared with every receiver.
        follow_receiver_feedback(video.sender, viewer.attach(codec))
        send_attached_packets(pc)
        return str(pc.localDescription.sdp)

    def _cancel_deadline(self, viewer_id: str) -> None:
        deadline = self._deadlines.pop(viewer_id, None)
        if deadline is not None:
            deadline.cancel()

    def _remove(self, viewer: Viewer) -> None:
        stream = self.streams.get(viewer.stream)
        if stream is not None:
            stream.remove_viewer(viewer.id)
        else:
            viewer.end()

    def _viewer_ended(self, viewer: Viewer) -> None:
        pc = self.peers.pop(viewer.id, None)
        self._cancel_deadline(viewer.id)
        if pc is not None:
            task = asyncio.get_running_loop().create_task(
                pc.close(), name=f"whep-close-{viewer.id}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def delete(self, request: web.Request) -> web.Response:
        """DELETE /whep/{stream}/{viewer}: end the viewer."""
        stream = self._stream(request)
        viewer = stream.remove_viewer(request.match_info["viewer"])
        if viewer is None:
            raise ApiError(404, "no such viewer (it may have ended)")
        return web.json_response({"closed": viewer.id})

    async def viewer_options(self, request: web.Request) -> web.Response:
        """OPTIONS /whep/{stream}/{viewer}: only DELETE is supported."""
        return web.Response(status=204, headers={"Allow": ALLOW_VIEWER})

    async def patch(self, request: web.Request) -> web.Response:
        """PATCH /whep/{stream}/{viewer}: trickle ICE and ICE restarts are not supported."""
        raise ApiError(
            405,
            "trickle ICE is not supported: the answer already carries every candidate",
            {"Allow": ALLOW_VIEWER},
        )

    async def list_streams(self, request: web.Request) -> web.Response:
        """GET /api/streams: live streams and their viewers."""
        return web.json_response({"streams": [s.describe() for s in self.streams.streams.values()]})

    async def shutdown(self, _: web.Application | None = None) -> None:
        """Close every viewer peer (app.on_shutdown; sessions end their streams too)."""
        for viewer_id in list(self._deadlines):
            self._cancel_deadline(viewer_id)
        peers = list(self.peers.values())
        self.peers.clear()
        await asyncio.gather(*(pc.close() for pc in peers), *self._tasks, return_exceptions=True)


def register_whep(app: web.Application) -> Whep:
    """Add the WHEP, stream and OBS routes (after rtc.webrtc.signalling.register_realtime)."""
    realtime = app[REALTIME_KEY]
    whep = Whep(realtime.streams, realtime.live)
    router = app.router
    router.add_route("OPTIONS", "/whep/{stream}", whep.options)
    router.add_post("/whep/{stream}", whep.post)
    router.add_route("OPTIONS", "/whep/{stream}/{viewer}", whep.viewer_options)
    router.add_delete("/whep/{stream}/{viewer}", whep.delete)
    router.add_route("PATCH", "/whep/{stream}/{viewer}", whep.patch)
    router.add_get("/api/streams", whep.list_streams)
    router.add_get("/obs/{stream}", page("obs.html"))  # it reads the stream from its URL
    app.on_shutdown.append(whep.shutdown)
    return whep
