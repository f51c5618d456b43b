"""Server-Sent Events of one thing's changing state (an avatar upload, a render job).

The thing holds a :class:`StateFeed` and tells it when its state changed and when it ended;
:func:`stream_feed` answers a GET with the state now, then each change, then the end. A
reader is woken by a change and reads the newest state, so a slow reader skips states
instead of queueing them, and never misses the last one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Any

from aiohttp import web

State = dict[str, Any]

KEEPALIVE = 15.0
"""Quiet seconds after which a stream writes a comment, which also notices a reader that
went away (a write to a closed connection fails)."""
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # a proxy (nginx) must pass each event on at once
}


class StateFeed:
    """The changing state of one thing, for any number of readers."""

    def __init__(self, snapshot: Callable[[], State]) -> None:
        self._snapshot = snapshot
        self._readers: set[asyncio.Event] = set()
        self._ended = asyncio.Event()

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def changed(self) -> None:
        """The state changed: wake every reader."""
        for woken in self._readers:
            woken.set()

    def end(self) -> None:
        """The state is final: readers get it, then their stream ends (idempotent)."""
        self._ended.set()
        self.changed()

    async def follow(
        self, interval: float = 0.0, keepalive: float | None = KEEPALIVE
    ) -> AsyncGenerator[State | None, None]:
        """The state now, then after each change until the end: at most one state per
        ``interval`` seconds, but the final one at once. None after ``keepalive`` quiet
        seconds (a stream writes a comment then)."""
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        self._readers.add(woken)
        try:
            while True:
                woken.clear()
                final, sent = self.ended, loop.time()
                # The snapshot is taken now, not when the change came, so the times in it
                # (elapsed, eta) are current.
                yield self._snapshot()
                if final:
                    return
                while not await _waited(woken, keepalive):
                    yield None
                left = sent + interval - loop.time()
                if left > 0 and not self.ended:
                    await _waited(self._ended, left)
        finally:
            self._readers.discard(woken)


async def _waited(event: asyncio.Event, timeout: float | None) -> bool:
    """Whether ``event`` is set within ``timeout`` seconds (None: wait for it)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
    return event.is_set()


async def stream_feed(
    request: web.Request,
    feed: StateFeed,
    message: Callable[[State], bytes],
    interval: float = 0.0,
) -> web.StreamResponse:
    """Answer ``request`` with ``feed`` as Server-Sent Events (``message`` writes one state)
    until the feed ends or the reader goes away."""
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    states = feed.follow(interval)
    try:
        async with contextlib.aclosing(states):
            async for state in states:
                await response.write(b": keepalive\n\n" if state is None else message(state))
    except ConnectionResetError:
        pass  # the reader went away
    return response
