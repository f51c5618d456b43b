"""Cascading a publication from one Janus to another (VideoRoom remote publishers, Janus
1.1.x): ``add_remote_publisher`` on the target gives an address and port, ``publish_remotely``
on the source makes it forward the publisher's RTP there, and the target's viewers see it as
one more publisher. Viewers so spread over several SFU hosts; the avatar server still sends
one stream, to the first Janus."""

from __future__ import annotations

import contextlib
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from rtc.http.bodies import PublishBody, RelayTarget
from rtc.outputs.janus import VIDEOROOM, JanusError, JanusSession, JanusUnreachable


class PublisherView(Protocol):
    """What a relay reads of its publication."""

    target: PublishBody
    feed: int | None


class Relay:
    """One cascade of a publisher into another Janus (made by :func:`open_relay`)."""

    def __init__(
        self,
        target: RelayTarget,
        janus: JanusSession,
        handle: int,
        remote_feed: int,
        remote_id: str,
    ) -> None:
        self.target = target
        self.janus = janus
        self.handle = handle
        self.remote_feed = remote_feed
        self.remote_id = remote_id

    async def close(
        self,
        source: JanusSession | None,
        source_handle: int | None,
        room: int,
        feed: int | None,
        source_secret: str | None,
    ) -> None:
        """Stop the forwarding on the source and remove the remote publisher (best effort:
        either Janus may be gone already)."""
        secret = {"secret": self.target.secret} if self.target.secret is not None else {}
        if source is not None and source_handle is not None and not source.lost.is_set():
            body: dict[str, Any] = {
                "request": "unpublish_remotely",
                "room": room,
                "publisher_id": feed,
                "remote_id": self.remote_id,
            }
            if source_secret is not None:
                body["secret"] = source_secret
            with contextlib.suppress(JanusError, JanusUnreachable):
                await source.request(source_handle, body)
        if not self.janus.lost.is_set():
            with contextlib.suppress(JanusError, JanusUnreachable):
                await self.janus.request(
                    self.handle,
                    {"request": "remove_remote_publisher", "room": self.target.room}
                    | {"id": self.remote_feed}
                    | secret,
                )
        with contextlib.suppress(JanusError, JanusUnreachable):
            await self.janus.destroy()

    def describe(self) -> dict[str, Any]:
        return {"url": self.target.url, "room": self.target.room, "feed": self.remote_feed}


async def open_relay(
    http: aiohttp.ClientSession,
    janus: JanusSession,
    handle: int,
    relay: RelayTarget,
    codec: str,
    mids: list[str],
    publisher: PublisherView,
    remote_id: str,
) -> Relay:
    """Cascade ``publisher`` (joined through ``janus``/``handle``) to ``relay``: a remote
    publisher there, fed by the first Janus's internal RTP forwarder."""
    remote = JanusSession(http, relay.url)
    await remote.create()
    remote_handle = await remote.attach(VIDEOROOM)
    secret = {"secret": relay.secret} if relay.secret is not None else {}
    try:
        await remote.request(
            remote_handle,
            {"request": "create", "room": relay.room, "videocodec": "vp8", "audiocodec": "opus"}
            | secret,
        )
    except JanusError as e:
        if e.code != 427:  # 427: the room exists already
            raise
    streams = [
        {"type": "video", "mindex": 0, "mid": mids[0], "codec": codec.split("/")[1].lower()},
        {"type": "audio", "mindex": 1, "mid": mids[1], "codec": "opus"},
    ]
    added = await remote.request(
        remote_handle,
        {
            "request": "add_remote_publisher",
            "room": relay.room,
            "display": publisher.target.display,
            "streams": streams,
        }
        | secret,
    )
    forward: dict[str, Any] = {
        "request": "publish_remotely",
        "room": publisher.target.room,
        "publisher_id": publisher.feed,
        "remote_id": remote_id,
        # Janus names the address only when it bound one ("iface"); else the relay's host
        # is where its RTP goes (the API and the media on one box, as usual).
        "host": added.get("ip") or urlsplit(relay.url).hostname,
        "port": added["port"],
    }
    if "rtcp_port" in added:
        forward["rtcp_port"] = added["rtcp_port"]
    if publisher.target.secret is not None:
        forward["secret"] = publisher.target.secret
    await janus.request(handle, forward)
    return Relay(relay, remote, remote_handle, int(added["id"]), remote_id)
