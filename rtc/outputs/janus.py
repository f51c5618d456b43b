"""A small client of Janus's HTTP API (its native signalling: https://janus.conf.meetecho.com/docs/rest.html).

Written here rather than taken from PyPI: ``janus-client`` drives the WebSocket transport
and brings its own media stack, ``janus-api-core`` is unmaintained; what a publisher needs is
six requests and one long-poll over plain aiohttp (about 150 lines), against a protocol
Janus documents.

A session is ``POST /janus {"janus": "create"}``; every request carries a ``transaction``.
Plugin requests are answered either at once (``success`` with ``plugindata``: create a room,
list participants) or with an ``ack`` followed by an ``event`` of the same transaction on
the long-poll ``GET /janus/{session}?maxev=N`` (join, publish: the ones that may carry
JSEP). Events without a pending transaction (``webrtcup``, ``hangup``, a destroyed room)
are queued for the owner. The long-poll is also the keepalive: Janus drops a session that
is silent for ``session_timeout`` (60 s by default); each poll returns within 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

VIDEOROOM = "janus.plugin.videoroom"
REQUEST_TIMEOUT = 10.0
"""Seconds a request (or an asynchronous plugin answer) may take before Janus counts as down."""
POLL_TIMEOUT = 45.0
"""Janus answers a long-poll within 30 s (a keepalive event when nothing happened)."""


class JanusError(Exception):
    """Janus (or its plugin) refused a request: ``code`` is Janus's error code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"Janus error {code}: {reason}")
        self.code = code
        self.reason = reason


class JanusUnreachable(Exception):
    """No Janus answered at the URL (refused, timed out, or not Janus's API)."""


class JanusSession:
    """One Janus session: its requests, its long-poll and the events nobody waited for."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url.rstrip("/")
        self.id: int | None = None
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=256)
        """Events without a pending transaction (webrtcup, hangup, media, room events)."""
        self.lost = asyncio.Event()
        """Set when the session is gone (Janus down, restarted, or the session timed out)."""
        self.lost_reason = ""
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._poll: asyncio.Task[None] | None = None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": body.get("transaction") or secrets.token_hex(6)}
        try:
            async with self.http.post(
                self.url + path, json=body, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
            ) as resp:
                if resp.status != 200:
                    raise JanusUnreachable(
                        f"{self.url} answered HTTP {resp.status}: not Janus's API?"
                    )
                reply = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise JanusUnreachable(f"no Janus at {self.url}: {type(e).__name__}: {e}") from None
        if not isinstance(reply, dict) or "janus" not in reply:
            raise JanusUnreachable(f"{self.url} did not answer like Janus: {str(reply)[:200]}")
        if reply["janus"] == "error":
            error = reply.get("error", {})
            raise JanusError(int(error.get("code", 0)), str(error.get("reason", "")))
        return reply

    async def create(self) -> int:
        """Create the session and start its long-poll."""
        reply = await self._post("", {"janus": "create"})
        self.id = int(reply["data"]["id"])
        self._poll = asyncio.get_running_loop().create_task(
            self._long_poll(), name=f"janus-poll-{self.id}"
        )
        return self.id

    async def attach(self, plugin: str) -> int:
        """Attach ``plugin``; the handle id."""
        reply = await self._post(f"/{self.id}", {"janus": "attach", "plugin": plugin})
        return int(reply["data"]["id"])

    async def request(self, handle: int, body: dict[str, Any]) -> dict[str, Any]:
        """A synchronous plugin request; its ``plugindata.data``. JanusError on a plugin
        error (``error_code``)."""
        reply = await self._post(f"/{self.id}/{handle}", {"janus": "message", "body": body})
        return _plugin_data(reply)

    async def message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """An asynchronous plugin request: (its event's plugin data, the event's JSEP)."""
        transaction = secrets.token_hex(6)
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[transaction] = waiter
        message: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            message["jsep"] = jsep
        try:
            reply = await self._post(f"/{self.id}/{handle}", message)
            if reply["janus"] != "ack":  # answered at once after all
                return _plugin_data(reply), reply.get("jsep")
            async with asyncio.timeout(REQUEST_TIMEOUT):
                event = await waiter
        except TimeoutError:
            raise JanusUnreachable(f"Janus did not answer {body.get('request')!r}") from None
        finally:
            self._pending.pop(transaction, None)
        return _plugin_data(event), event.get("jsep")

    async def trickle_completed(self, handle: int) -> None:
        """Say every candidate is in the SDP already (aiortc gathers before it offers;
        without this Janus waits for more and ICE never completes)."""
        await self._post(
            f"/{self.id}/{handle}", {"janus": "trickle", "candidate": {"completed": True}}
        )

    async def detach(self, handle: int) -> None:
        await self._post(f"/{self.id}/{handle}", {"janus": "detach"})

    async def destroy(self) -> None:
        """Destroy the session (best effort) and stop polling."""
        try:
            if self.id is not None and not self.lost.is_set():
                await self._post(f"/{self.id}", {"janus": "destroy"})
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop polling without telling Janus (it is gone, or destroy did)."""
        poll, self._poll = self._poll, None
        if poll is not None:
            poll.cancel()
            await asyncio.gather(poll, return_exceptions=True)
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(JanusUnreachable("the Janus session ended"))

    async def _long_poll(self) -> None:
        while True:
            try:
                async with self.http.get(
                    f"{self.url}/{self.id}",
                    params={"maxev": "10"},
                    timeout=aiohttp.ClientTimeout(total=POLL_TIMEOUT),
                ) as resp:
                    events = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                self._lose(f"Janus stopped answering: {type(e).__name__}: {e}")
                return
            for event in events if isinstance(events, list) else [events]:
                if not isinstance(event, dict):
                    continue
                if event.get("janus") == "error":
                    self._lose(f"Janus: {event.get('error', {}).get('reason', event)}")
                    return
                self._dispatch(event)

    def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("janus")
        if kind == "keepalive":
            return
        waiter = self._pending.get(str(event.get("transaction")))
        if kind == "event" and waiter is not None and not waiter.done():
            waiter.set_result(event)
            return
        with contextlib.suppress(asyncio.QueueFull):  # a slow owner loses old news only
            self.events.put_nowait(event)

    def _lose(self, reason: str) -> None:
        if not self.lost.is_set():
            self.lost_reason = reason
            self.lost.set()
            log.warning("Janus session %s lost: %s", self.id, reason)
            for waiter in self._pending.values():
                if not waiter.done():
                    waiter.set_exception(JanusUnreachable(reason))


def _plugin_data(reply: dict[str, Any]) -> dict[str, Any]:
    data = reply.get("plugindata", {}).get("data", {})
    if not isinstance(data, dict):
        return {}
    if "error_code" in data:
        raise JanusError(int(data["error_code"]), str(data.get("error", "")))
    return data
