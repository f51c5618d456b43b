"""Session events for Server-Sent Events subscribers (the data channel gets them directly).

Each subscriber has a bounded queue; a subscriber that stops reading loses its oldest events
instead of growing memory or slowing the session down.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator
from typing import Any

from rtc.live.queues import DropOldestQueue

log = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = 64
"""Events kept per subscriber that has not read them yet."""
RECENT = 16
"""Events replayed to a subscriber that connects late (e.g. after POSTing say)."""


class EventHub:
    """Fan-out of one session's events to any number of subscribers."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self._subscribers: set[DropOldestQueue[dict[str, Any]]] = set()
        self._recent: list[dict[str, Any]] = []
        self._closed = False

    def publish(self, event: dict[str, Any]) -> None:
        """Send ``event`` to every subscriber (never blocks)."""
        if self._closed:
            return
        self._recent = [*self._recent[-(RECENT - 1) :], event]
        for queue in self._subscribers:
            queue.put(event)  # a slow reader loses its oldest events, never holds the session

    async def subscribe(
        self, replay: bool = False, keepalive: float | None = None
    ) -> AsyncGenerator[dict[str, Any] | None, None]:
        """Events until the session closes (optionally the recent ones first).

        With ``keepalive``, None is yielded after that many quiet seconds, so a streaming
        response can write a comment and notice a client that went away.
        """
        queue: DropOldestQueue[dict[str, Any]] = DropOldestQueue(SUBSCRIBER_QUEUE)
        if replay:
            for old in self._recent:
                queue.put(old)
        if self._closed:
            queue.close()
        self._subscribers.add(queue)
        try:
            while True:
                try:
                    async with asyncio.timeout(keepalive):
                        event = await queue.get()
                except TimeoutError:
                    yield None
                    continue
                if event is None:  # the session closed
                    return
                yield event
        finally:
            self._subscribers.discard(queue)

    def close(self) -> None:
        """End every subscription (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for queue in self._subscribers:
            queue.close()


def sse_message(event: dict[str, Any], kind: str | None = None) -> bytes:
    """One Server-Sent Events message: ``event: <kind>`` (by default the event's type) and
    the JSON as data."""
    kind = str(event.get("type", "message") if kind is None else kind).replace("\n", " ")
    return f"event: {kind}\ndata: {json.dumps(event)}\n\n".encode()
