"""Render slots shared by ``POST /api/generate`` and ``/api/jobs``: a few renders run at
once (the machine has few cores), a few more wait their turn, and beyond that the request is
refused with 503, so a burst of requests cannot pile up unbounded work and memory."""

from __future__ import annotations

import asyncio

from rtc.http.errors import ApiError

RETRY_AFTER = "5"
"""Seconds a client refused for a full queue is told to wait."""


class RenderSlots:
    """``parallel`` renders at once and ``max_waiting`` waiting; :meth:`admit` refuses more."""

    def __init__(self, parallel: int, max_waiting: int) -> None:
        self.parallel = max(1, parallel)
        self.max_waiting = max(0, max_waiting)
        self._free = asyncio.Semaphore(self.parallel)
        # Admitted and not yet ended: waiting plus running. Counted when admitted, not when
        # a caller starts to wait, so two requests admitted in the same instant (a job's task
        # waits later than its POST answers) cannot both take the last place.
        self._admitted = 0
        self._holding = 0

    @property
    def waiting(self) -> int:
        """Admitted renders waiting for a slot."""
        return self._admitted - self._holding

    def admit(self) -> Turn:
        """A place in the queue; ApiError(503) when every slot and place is taken."""
        if self._admitted >= self.parallel + self.max_waiting:
            raise ApiError(
                503,
                f"too many renders queued (limit {self.max_waiting} waiting); try again shortly",
                {"Retry-After": RETRY_AFTER},
            )
        self._admitted += 1
        return Turn(self)


class Turn:
    """One admitted render's claim on :class:`RenderSlots`: a place in the queue, then a
    slot. :meth:`end` gives back whichever it holds, once."""

    def __init__(self, slots: RenderSlots) -> None:
        self._slots = slots
        self.state = "waiting"
        """waiting (for a slot), holding (a slot) or ended."""

    async def wait(self) -> None:
        """Wait for a free slot; on cancellation the turn is still waiting (call end())."""
        await self._slots._free.acquire()
        self._slots._holding += 1
        self.state = "holding"

    def end(self) -> None:
        """Give back the slot or the place in the queue (idempotent)."""
        if self.state == "ended":
            return
        if self.state == "holding":
            self._slots._holding -= 1
            self._slots._free.release()
        self._slots._admitted -= 1
        self.state = "ended"

    def abandon(self) -> None:
        """End the turn if it never got a slot (a slot is given back by its render thread)."""
        if self.state == "waiting":
            self.end()
